"""Speed benchmark: planner latency per action, update time, and the full loop's time per env step.

`python -m scripts.benchmark_speed [TASK] [--repeats N] [--loop-steps N] [--out F] [key=value ...]`
Default TASK is halfcheetah. Times are wall clock after JIT warm-up, median with min-max, compile
time apart. Writes scripts/results/speed_<task>.json. Also times the planner at PETS's default
planning work (480 candidates x 20 particles x horizon 45 x 5 iterations) for the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("task", nargs="?", default="halfcheetah")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--loop-steps", type=int, default=1000, help="timed steps after seeding")
    parser.add_argument("--skip-pets", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default results/speed_<task>.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import jax

    from agents.agent import make_agent
    from agents.trainer import train
    from envs import env_spec
    from scripts.machine import machine_info, timed, write_result
    from worldmodel.config import load_config

    cfg = load_config([args.task, *args.overrides])
    spec = env_spec(cfg.env.id)
    D, A = spec["obs_dim"], spec["act_dim"]
    sections = {k: cfg.section(k) for k in ("model", "loss", "optim", "planner")}
    agent = make_agent(D, A, **sections)
    state = agent.init(key=jax.random.key(0))
    carry = agent.init_carry(1)
    rng = np.random.default_rng(0)
    obs, first = rng.normal(size=(1, D)).astype(np.float32), np.zeros(1, bool)
    result = {
        "task": args.task,
        "config": {k: sections[k] for k in ("model", "planner")},
        "command": " ".join(["python -m scripts.benchmark_speed", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
    }

    def act(plan=True, explore=True, agent=agent):
        action, _, _ = agent.act(
            state, carry, obs, first, key=jax.random.key(1), explore=explore, plan=plan
        )
        return np.asarray(action)  # host -> device -> host, as the driver sees it

    result["act_plan_ms"] = timed(act, args.repeats)
    result["act_prior_ms"] = timed(lambda: act(plan=False), args.repeats)
    B, H = cfg.train.batch_size, cfg.train.horizon
    batch = {
        "obs": rng.normal(size=(B, H + 1, D)).astype(np.float32),
        "action": rng.uniform(-1, 1, (B, H, A)).astype(np.float32),
        "reward": rng.normal(size=(B, H)).astype(np.float32),
        "terminated": np.zeros((B, H), np.float32),
    }
    box = [agent.init(key=jax.random.key(0))]

    def update():
        box[0], metrics = agent.update(box[0], batch, key=jax.random.key(2))
        jax.block_until_ready(metrics)

    result["update_ms"] = timed(update, max(args.repeats // 2, 10))
    if not args.skip_pets:
        pets = {
            **sections["planner"],
            "num_samples": 480 * 20,
            "num_elites": 50 * 20,
            "num_pi_trajs": 0,
            "horizon": 45,
            "iterations": 5,
        }
        big = make_agent(D, A, **{**sections, "planner": pets})
        big_carry = big.init_carry(1)
        result["act_pets_equal_work_ms"] = timed(
            lambda: np.asarray(
                big.act(state, big_carry, obs, first, key=jax.random.key(1), explore=True)[0]
            ),
            3,
        )
        result["pets_equal_work_planner"] = pets
    with tempfile.TemporaryDirectory() as tmp:
        seed_steps = cfg.train.seed_steps
        loop_cfg = load_config(
            [
                args.task,
                *args.overrides,
                f"train.steps={seed_steps + args.loop_steps}",
                "eval.every=0",
                "checkpoint.every=0",
                f"log.every={args.loop_steps // 4}",
                "log.progress=false",
            ]
        )
        records = []
        train(loop_cfg, Path(tmp), emit=lambda kind, step, data: records.append((kind, step, data)))
        sps = [d["sps"] for kind, step, d in records if kind == "train" and step > seed_steps]
        result["loop"] = {
            "steps_timed": args.loop_steps,
            "sps_after_seeding": sps,
            "s_per_env_step_median": 1.0 / float(np.median(sps[1:] or sps)),
        }
    out = args.out or Path(__file__).parent / "results" / f"speed_{args.task}.json"
    write_result(out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "config")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate one trained checkpoint under several planner settings:
`python -m scripts.planner_ablation RUN_DIR --variants "planner.ensemble=split" "planner.value=min
planner.horizon=5" ... [--no-plan-too] [--episodes N] [--step S] [--latency N] --out results.json`.

Each variant is a space-separated list of `planner.*` / `abstain.*` overrides ("" = the run's own
config). Every variant plays the same evaluation seeds (those training's evaluations used), so the
figures differ only by how the same parameters act. Writes per-episode returns, mean, std and the
command to --out (atomic JSON). `--latency N` also times each variant's action for one
observation (host -> device -> host, gate included, as `scripts.benchmark_speed` does): the first
call apart, then the median of N calls, so planner size can be weighed against return.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--variants", nargs="+", required=True, help='e.g. "planner.value=min"')
    parser.add_argument("--no-plan-too", action="store_true", help="also the policy prior alone")
    parser.add_argument("--episodes", type=int, default=None, help="default: eval.episodes")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--latency", type=int, default=0, help="time N single actions per variant")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from scripts.bundle import evaluate_bundle, load_bundle
    from scripts.machine import machine_info, timed, write_result
    from worldmodel.errors import UserError

    rows = []
    try:
        runs = [(v, True) for v in args.variants] + ([("", False)] if args.no_plan_too else [])
        for variant, plan in runs:
            bundle = load_bundle(args.run_dir, step=args.step, overrides=variant.split())
            cfg = bundle.cfg
            episodes = args.episodes or cfg.eval.episodes
            seed = cfg.seed + cfg.eval.seed_offset
            t0 = time.perf_counter()
            result = evaluate_bundle(bundle, episodes=episodes, seed=seed, plan=plan)
            row = {
                "variant": variant if plan else "policy prior (no planning)",
                "planner": cfg.section("planner"),
                "plan": plan,
                "returns": result["returns"],
                "mean": result["mean"],
                "std": result["std"],
                "seeds": [seed, seed + episodes - 1],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            if args.latency > 0:
                row["act_ms"] = timed(_one_action(bundle, plan), args.latency)
            rows.append(row)
            ms = f"   {row['act_ms']['median_ms']:.2f} ms/action" if "act_ms" in row else ""
            print(
                f"{row['variant'] or '(run config)':50s} {row['mean']:8.1f} ± {row['std']:.1f}{ms}"
            )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = "python -m scripts.planner_ablation " + shlex.join(
        sys.argv[1:] if argv is None else [str(a) for a in argv]
    )
    write_result(
        args.out,
        {
            "env_id": bundle.cfg.env.id,
            "run_dir": str(args.run_dir),
            "checkpoint_step": bundle.step,
            "command": command,
            "machine": machine_info(),
            "variants": rows,
        },
    )
    print(f"wrote {args.out}")
    return 0


def _one_action(bundle, plan: bool):
    """fn() -> one greedy action (A,) for one observation, fetched to the host."""
    import jax
    import numpy as np

    agent, state = bundle.agent, bundle.state
    D = agent.model.obs_dim
    obs = bundle.obs_sample[:1] if bundle.obs_sample is not None else np.zeros((1, D), np.float32)
    carry, first = agent.init_carry(1, like=state), np.ones(1, bool)
    key = jax.random.key(0)
    return lambda: np.asarray(
        agent.act(state, carry, obs, first, key=key, explore=False, plan=plan)[0]
    )


if __name__ == "__main__":
    sys.exit(main())

"""MJX backend speed: `python -m scripts.benchmark_mjx [--worlds 1 16 256] [--steps 100]`.

HalfCheetah-v5 env steps/s (one env step = 5 MuJoCo steps) at N parallel worlds, random actions:
MJX on device (a jitted scan of batched steps, actions drawn on device; compile time apart),
MJX through the host adapter the Driver uses (one transfer per step), and Gymnasium's CPU
SyncVectorEnv (envs.make_env) at the same N. Raw: scripts/results/mjx_<platform>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ENV_ID = "HalfCheetah-v5"


def _best_rate(run, work: int, repeats: int) -> float:
    """work / the fastest of `repeats` timed calls of `run()` (which blocks until done)."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(time.perf_counter() - tic)
    return work / min(times)


def bench_mjx_device(n: int, steps: int, repeats: int) -> dict:
    """Env steps/s of `steps` batched MJX steps over `n` worlds inside one jitted scan."""
    import jax

    from envs.mjx_env import make_batched, make_mjx_task

    task = make_mjx_task(ENV_ID)
    chunk = 512 if jax.default_backend() == "cpu" else None  # the CPU hang at N >= 1024
    reset, step = make_batched(task, max_episode_steps=task.max_episode_steps, chunk=chunk)

    def rollout(state, key):
        def body(s, k):
            a = jax.random.uniform(k, (n, task.act_dim), minval=-1.0, maxval=1.0)
            s, out = step(s, a)
            return s, out["reward"]

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    state = reset(jax.random.split(jax.random.key(0), n))
    tic = time.perf_counter()
    compiled = jax.jit(rollout).lower(state, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - tic
    run = lambda: jax.block_until_ready(compiled(state, jax.random.key(1)))
    run()  # warm-up
    return {"compile_s": compile_s, "steps_per_s": _best_rate(run, n * steps, repeats)}


def bench_mjx_adapter(n: int, steps: int, repeats: int) -> dict:
    """Env steps/s of MjxVectorEnv.step (numpy in, numpy out), as the Driver calls it."""
    from envs import make_env

    env = make_env(ENV_ID, num_envs=n, seed=0, backend="mjx")
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, 6)).astype(np.float32)
    tic = time.perf_counter()
    env.step(actions[0])  # compiles
    compile_s = time.perf_counter() - tic
    run = lambda: [env.step(a) for a in actions]
    rate = _best_rate(run, n * steps, repeats)
    env.close()
    return {"compile_s": compile_s, "steps_per_s": rate}


def bench_gymnasium(n: int, steps: int, repeats: int) -> dict:
    """Env steps/s of Gymnasium's SyncVectorEnv (C MuJoCo, one thread) from envs.make_env."""
    from envs import make_env

    env = make_env(ENV_ID, num_envs=n, seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, 6)).astype(np.float32)
    run = lambda: [env.step(a) for a in actions]
    rate = _best_rate(run, n * steps, repeats)
    env.close()
    return {"steps_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--steps", type=int, default=100, help="batched env steps per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the fastest counts")
    p.add_argument("--out", type=Path, default=None, help="default results/mjx_<platform>.json")
    p.add_argument("--no-gymnasium", action="store_true", help="skip the CPU baseline")
    args = p.parse_args(argv)
    import jax

    from scripts.machine import machine_info, write_result

    platform = jax.default_backend()
    out_path = args.out or RESULTS / f"mjx_{platform}.json"
    cmd = "python -m scripts.benchmark_mjx " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "command": cmd.strip(),
        "env_id": ENV_ID,
        "unit": "env steps/s (1 env step = 5 MuJoCo steps), random actions",
        "steps": args.steps,
        "platform": platform,
        "load_average": os.getloadavg(),
        "machine": machine_info(),
        "rows": [],
    }
    for n in args.worlds:
        row = {"worlds": n}
        row["mjx_device"] = bench_mjx_device(n, args.steps, args.repeats)
        row["mjx_adapter"] = bench_mjx_adapter(n, args.steps, args.repeats)
        if not args.no_gymnasium:
            row["gymnasium_cpu"] = bench_gymnasium(n, args.steps, args.repeats)
            row["mjx_device_over_gymnasium"] = (
                row["mjx_device"]["steps_per_s"] / row["gymnasium_cpu"]["steps_per_s"]
            )
        result["rows"].append(row)
        write_result(out_path, result)  # after every N: a killed run keeps the finished rows
        cells = {k: round(v["steps_per_s"]) for k, v in row.items() if isinstance(v, dict)}
        print(f"N={n}: {cells}, compile {row['mjx_device']['compile_s']:.1f} s", flush=True)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

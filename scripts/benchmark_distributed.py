"""Data-parallel update cost across local processes (jax.distributed on 127.0.0.1, CPU).

Times one update per process with the gradients averaged two ways, interleaved A B A B:
`packed` (the default: `make_agent(..., mesh=mesh)`, one flat all-reduce per gradient step) and
`per_leaf` (the same update left to XLA's partitioner, which all-reduces each gradient leaf;
XLA:CPU's collectives send each leaf of its tuple all-reduce as its own round trip). Runs the
whole thing with 1 process, then with `--processes` processes, and writes one JSON.

    python -m scripts.benchmark_distributed --processes 2 --overlays debug --out F
    python -m scripts.benchmark_distributed --processes 2 --overlays halfcheetah --out F

The global batch is `train.batch_size` of the config, split evenly over the processes; the model
sizes are HalfCheetah's (obs 17, action 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

OBS_DIM, ACT_DIM = 17, 6


def _batch(rows: int, horizon: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(rows, horizon + 1, OBS_DIM)).astype(np.float32),
        "action": rng.uniform(-1, 1, (rows, horizon, ACT_DIM)).astype(np.float32),
        "reward": rng.normal(size=(rows, horizon)).astype(np.float32),
        "terminated": np.zeros((rows, horizon), np.float32),
        "mask": np.ones((rows, horizon), np.float32),
    }


def worker(overlays: list[str], repeats: int) -> None:
    """One process: build both variants, warm up, time them interleaved, print a JSON line."""
    from worldmodel.distributed import init_distributed

    init_distributed(timeout_s=120)
    import jax
    import numpy as np

    from agents.agent import make_agent
    from worldmodel.config import load_config
    from worldmodel.sharding import make_mesh, make_sharded_update, place_state

    cfg = load_config(overlays)
    sections = {n: cfg.section(n) for n in ("model", "loss", "optim", "planner", "abstain")}
    procs = jax.process_count()
    mesh = make_mesh(data=procs)
    rows = cfg.train.batch_size // procs
    batch = _batch(rows, cfg.train.horizon, seed=jax.process_index())
    variants = {}
    for name, agent_mesh in (("packed", mesh), ("per_leaf", None)):
        agent = make_agent(OBS_DIM, ACT_DIM, **sections, mesh=agent_mesh)
        state = place_state(agent.init(key=jax.random.key(0)), mesh)
        variants[name] = [make_sharded_update(agent.update, mesh), state]
    first = {}
    for name, v in variants.items():
        start = time.perf_counter()
        v[1], m = v[0](v[1], batch, key=jax.random.key(0))
        jax.block_until_ready(m)
        first[name] = time.perf_counter() - start
    times = {name: [] for name in variants}
    for i in range(repeats):
        for name, v in variants.items():
            start = time.perf_counter()
            v[1], m = v[0](v[1], batch, key=jax.random.key(i + 1))
            jax.block_until_ready(m)
            times[name].append(time.perf_counter() - start)
    out = {"processes": procs, "global_batch": rows * procs, "process": jax.process_index()}
    for name, t in times.items():
        t = np.asarray(t) * 1e3
        out[name] = {
            "median_ms": float(np.median(t)),
            "min_ms": float(t.min()),
            "max_ms": float(t.max()),
            "first_call_s": first[name],
            "repeats": repeats,
        }
    print("RESULT " + json.dumps(out), flush=True)


def launch(processes: int, overlays: list[str], repeats: int, timeout: float) -> list[dict]:
    """Run `processes` workers on this machine (one CPU device each); their RESULT lines."""
    from scripts.runtime import free_port

    port = free_port()
    procs = []
    for i in range(processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        if processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(i),
            )
        cmd = [sys.executable, "-m", "scripts.benchmark_distributed", "--worker",
               "--repeats", str(repeats), "--overlays", *overlays]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise SystemExit(f"error: worker exited with {p.returncode}")
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--overlays", nargs="+", default=["debug"])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.processes < 1:
        ap.error("--processes must be >= 1")
    if args.worker:
        return worker(args.overlays, args.repeats)

    from scripts.machine import machine_info, write_result

    runs = {}
    for n in sorted({1, args.processes}):
        runs[str(n)] = launch(n, args.overlays, args.repeats, args.timeout)
        main_proc = runs[str(n)][0]
        print(
            f"{n} process(es): packed {main_proc['packed']['median_ms']:.1f} ms, "
            f"per-leaf {main_proc['per_leaf']['median_ms']:.1f} ms per update (process 0 median)"
        )
    result = {
        "command": "python -m scripts.benchmark_distributed " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "runs": runs,
    }
    if args.out:
        write_result(args.out, result)


if __name__ == "__main__":
    main()

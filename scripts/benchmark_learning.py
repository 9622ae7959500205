"""Learning benchmark: train TASK for each seed, keep the evaluation curve and timings as JSON.

`python -m scripts.benchmark_learning TASK [key=value ...] --seeds 0 1 [--runs DIR ...]`
Runs `scripts.train` in-process per seed (run folders under runs/bench/), then writes
scripts/results/learning_<task>.json with every seed's curve (per-episode eval returns), wall-clock,
env steps/s, the machine and the exact command. `--out` changes the file. `--runs` (one folder per
seed) continues existing run folders instead: a benchmark stopped by SIGTERM/SIGINT (which
checkpoints) resumes where it stopped. Each run records `complete` (reached train.steps) and
`env_steps` (the last logged step): a stopped run's curve is partial and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _curve(metrics_path: Path) -> tuple[list[dict], list[float], int]:
    """(eval records, train steps/s, last logged env step) of a run's metrics.jsonl."""
    evals, sps, last = [], [], 0
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        last = max(last, int(record.get("env_step", 0)))
        if record["kind"] == "eval":
            keys = ("env_step", "mean", "std", "returns", "lengths", "prior")
            evals.append({k: record[k] for k in keys if k in record})
        elif record["kind"] == "train":
            sps.append(record["sps"])
    return evals, sps, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("task", help="task overlay name, e.g. halfcheetah")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=Path, nargs="+", default=None, help="resume these folders")
    parser.add_argument("overrides", nargs="*", help="extra overlays or key=value overrides")
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from scripts import train as train_script
    from scripts.machine import machine_info, write_result
    from scripts.runtime import claim_run_dir
    from worldmodel.config import config_from_file

    out = args.out or Path(__file__).parent / "results" / f"learning_{args.task}.json"
    if args.runs is not None and len(args.runs) != len(args.seeds):
        print(f"error: --runs needs one folder per seed ({len(args.seeds)})", file=sys.stderr)
        return 2
    runs = []
    for i, seed in enumerate(args.seeds):
        run_dir = (
            args.runs[i]
            if args.runs is not None
            else claim_run_dir(Path("runs") / "bench" / args.task, f"seed{seed}")
        )
        start = time.perf_counter()
        code = train_script.main(
            [args.task, *args.overrides, f"seed={seed}", f"run_dir={run_dir}", "log.progress=false"]
        )
        if code:
            return code
        evals, sps, last = _curve(run_dir / "metrics.jsonl")
        steps = config_from_file(run_dir / "config.yaml").train.steps
        runs.append(
            {
                "seed": seed,
                "complete": last >= steps,
                "env_steps": last,
                "run_dir": str(run_dir),
                "wall_clock_s": time.perf_counter() - start,
                "train_sps_median": sorted(sps)[len(sps) // 2] if sps else None,
                "evals": evals,
            }
        )
        result = {
            "task": args.task,
            "command": " ".join(
                [
                    "python -m scripts.benchmark_learning",
                    *(argv if argv is not None else sys.argv[1:]),
                ]
            ),
            "machine": machine_info(),
            "runs": runs,
        }
        write_result(out, result)  # after every seed: a killed benchmark keeps finished seeds
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

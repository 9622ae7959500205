"""Plot learning curves: evaluation return vs env steps, grouped by env id, mean and band over seeds.

`python -m scripts.plot_learning PATH [PATH ...] [--out FILE.png] [--band std|minmax|none]
[--reference STEP:RETURN ...] [--train-episodes BIN]`. A PATH is a run folder (its metrics.jsonl 'eval' records and
config.yaml's env.id and seed), a folder holding run folders (searched recursively), or a
benchmark JSON from scripts/benchmark_learning.py. Reference points (e.g. a peer's published
curve) are drawn as crosses. `--train-episodes BIN` plots the training episodes' returns
(exploring, so not the protocol's evaluation) averaged per BIN env steps instead, for runs
trained without evaluations. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from worldmodel.errors import UserError


def _run_curve(run_dir: Path, train_bin: int = 0) -> tuple[str, tuple, tuple | None] | None:
    """(env id, (steps, mean returns), the prior-alone curve or None) of a run folder's eval
    records (or, with train_bin > 0, its training episodes' returns averaged per train_bin
    steps, and no prior curve); None when it has none."""
    by_step: dict[int, float] = {}
    prior: dict[int, float] = {}
    bins: dict[int, list[float]] = {}
    for n, line in enumerate((run_dir / "metrics.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{run_dir / 'metrics.jsonl'} line {n} is not JSON: {err}") from err
        if record.get("kind") == "eval" and not train_bin:
            by_step[int(record["env_step"])] = float(record["mean"])  # a resume may repeat one
            if "prior" in record:
                prior[int(record["env_step"])] = float(record["prior"]["mean"])
        elif record.get("kind") == "episode" and train_bin:
            end = -(-int(record["env_step"]) // train_bin) * train_bin  # the bin's last step
            bins.setdefault(end, []).append(float(record["return"]))
    by_step |= {step: float(np.mean(v)) for step, v in bins.items()}
    if not by_step:
        return None
    env_id = "unknown env"
    config = run_dir / "config.yaml"
    if config.is_file():
        data = yaml.safe_load(config.read_text()) or {}
        env_id = str((data.get("env") or {}).get("id", env_id))
    return env_id, _sorted(by_step), _sorted(prior) if prior else None


def _sorted(by_step: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array(sorted(by_step), float)
    return steps, np.array([by_step[int(s)] for s in steps])


def _benchmark_curves(path: Path) -> tuple[str, list, list]:
    """(task, [(steps, returns)] per run, the same for the prior alone where recorded)."""
    data = json.loads(path.read_text())
    runs, priors = [], []
    for run in data["runs"]:
        runs.append(_sorted({e["env_step"]: e["mean"] for e in run["evals"]}))
        prior = {e["env_step"]: e["prior"]["mean"] for e in run["evals"] if "prior" in e}
        if prior:
            priors.append(_sorted(prior))
    return data["task"], runs, priors


def collect(
    paths: list[Path], train_bin: int = 0
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{env id: [(steps (T,), returns (T,)) per run]} from run folders, folders of runs and
    benchmark JSON files; evaluations that also played the policy prior alone (eval.prior_too)
    add the group '<env id> (prior alone)'. Raises UserError when a path holds none."""
    groups: dict[str, list] = {}
    for path in paths:
        found = 0
        if path.is_file() and path.suffix == ".json":
            name, runs, priors = _benchmark_curves(path)
            groups.setdefault(name, []).extend(runs)
            if priors:
                groups.setdefault(f"{name} (prior alone)", []).extend(priors)
            found = len(runs)
        elif path.is_dir():
            for metrics in sorted(path.rglob("metrics.jsonl")):
                curve = _run_curve(metrics.parent, train_bin)
                if curve is not None:
                    groups.setdefault(curve[0], []).append(curve[1])
                    if curve[2] is not None:
                        groups.setdefault(f"{curve[0]} (prior alone)", []).append(curve[2])
                    found += 1
        elif not path.exists():
            raise UserError(f"{path} does not exist")
        if not found:
            raise UserError(f"{path} holds no evaluation records (metrics.jsonl 'eval' lines)")
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None, help="default: learning.png beside")
    parser.add_argument("--band", choices=("std", "minmax", "none"), default="std")
    parser.add_argument("--reference", nargs="*", default=[], help="STEP:RETURN points")
    parser.add_argument("--reference-label", default="reference")
    parser.add_argument("--train-episodes", type=int, default=0, metavar="BIN")
    args = parser.parse_args(argv)
    from scripts.plots import plot_learning_curves

    try:
        groups = collect(args.paths, args.train_episodes)
        reference = []
        for point in args.reference:
            try:
                step, value = map(float, point.split(":"))
            except ValueError as err:
                raise UserError(f"--reference {point!r} must be STEP:RETURN") from err
            reference.append((step, value))
        first = args.paths[0]
        out = args.out or (first.with_suffix(".png") if first.is_file() else first / "learning.png")
        plot_learning_curves(
            groups,
            out,
            band=args.band,
            reference=reference,
            reference_label=args.reference_label,
            ylabel="training episode return" if args.train_episodes else "evaluation return",
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plot learning curves (evaluation return vs env steps, mean and per-seed) from benchmark JSON.

`python -m scripts.plot_learning scripts/results/learning_halfcheetah.json [--out FILE.png]
[--reference STEP:RETURN ...]` (reference points, e.g. a peer's published curve, drawn as
crosses). Needs matplotlib (`pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reference", nargs="*", default=[], help="STEP:RETURN points")
    parser.add_argument("--reference-label", default="reference")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: plotting needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for path in args.results:
        data = json.loads(path.read_text())
        curves = {}
        for run in data["runs"]:
            steps = [e["env_step"] for e in run["evals"]]
            means = [e["mean"] for e in run["evals"]]
            ax.plot(steps, means, alpha=0.35, lw=1)
            curves[run["seed"]] = dict(zip(steps, means, strict=True))
        common = sorted(set.intersection(*(set(c) for c in curves.values())))
        if common:
            stack = np.array([[c[s] for s in common] for c in curves.values()])
            mean, std = stack.mean(0), stack.std(0)
            label = f"{data['task']} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
            ax.plot(common, mean, lw=2, label=label)
            ax.fill_between(common, mean - std, mean + std, alpha=0.2)
    if args.reference:
        pts = [tuple(map(float, p.split(":"))) for p in args.reference]
        ax.plot(*zip(*pts, strict=True), "kx", ms=7, label=args.reference_label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return (mean of 10 episodes)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = args.out or args.results[0].with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

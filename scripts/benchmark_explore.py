"""Curiosity benchmark: does the disagreement bonus explore more? `python -m scripts.benchmark_explore RUN_A RUN_B ...`

Reads the replay of each trained run folder (e.g. one with planner.uncertainty_coef=0 and one
with a positive bonus, same seed and budget) and measures state coverage of everything the
agent collected after the seed phase (the seed phase is uniform random actions in both):
  cells: occupied cells of a 40 x 40 grid over the first two principal components of the
         pooled observations (all runs share the axes and the grid: 1st-99th percentiles);
  entropy: mean over observation dims of the entropy (nats) of a 40-bin histogram on pooled
         bins. Raw numbers go to scripts/results/explore_<env>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from scripts.machine import write_result

RESULTS = Path(__file__).resolve().parent / "results"
BINS = 40


def _observations(run_dir: Path) -> tuple[np.ndarray, dict]:
    from scripts.bundle import load_run

    _, _, cfg, meta, replay = load_run(run_dir)
    n = int(replay["size"])
    obs = np.asarray(replay["obs"])[:, :n].reshape(-1, replay["obs"].shape[-1])
    seed_steps = cfg.train.seed_steps // cfg.env.action_repeat
    obs = obs[seed_steps:]  # one env: slots are in time order until the ring wraps
    info = {"run": str(run_dir), "uncertainty_coef": cfg.planner.uncertainty_coef,
            "env": cfg.env.id, "seed": cfg.seed, "env_steps": meta["env_steps"],
            "transitions_measured": len(obs)}  # fmt: skip
    return obs, info


def coverage(obs_by_run: list[np.ndarray]) -> list[dict]:
    pooled = np.concatenate(obs_by_run)
    mean, std = pooled.mean(0), pooled.std(0) + 1e-8
    _, _, vt = np.linalg.svd((pooled - mean) / std, full_matrices=False)
    proj = [((o - mean) / std) @ vt[:2].T for o in obs_by_run]
    allp = np.concatenate(proj)
    lo, hi = np.percentile(allp, 1, axis=0), np.percentile(allp, 99, axis=0)
    edges = [np.linspace(lo[i], hi[i], BINS + 1) for i in range(2)]
    dim_edges = [
        np.linspace(*np.percentile(pooled[:, d], [1, 99]), BINS + 1) for d in range(pooled.shape[1])
    ]
    out = []
    for o, p in zip(obs_by_run, proj, strict=True):
        grid, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=edges)
        ent = []
        for d, e in enumerate(dim_edges):
            h, _ = np.histogram(np.clip(o[:, d], e[0], e[-1]), bins=e)
            q = h[h > 0] / h.sum()
            ent.append(float(-(q * np.log(q)).sum()))
        out.append({"cells": int((grid > 0).sum()), "entropy": float(np.mean(ent))})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from worldmodel.errors import UserError

    try:
        loaded = [_observations(r) for r in args.runs]
        n = min(len(o) for o, _ in loaded)  # equal sample counts
        cov = coverage([o[:n] for o, _ in loaded])
        rows = [
            info | c | {"transitions_compared": n} for (_, info), c in zip(loaded, cov, strict=True)
        ]
        for r in rows:
            print(
                f"beta {r['uncertainty_coef']:+.2f}  cells {r['cells']:4d}  entropy {r['entropy']:.3f}  ({r['run']})"
            )
        name = args.out / f"explore_{rows[0]['env'].split('-')[0].replace('/', '_')}.json"
        cmd = "python -m scripts.benchmark_explore " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_result(name, {"command": cmd, "runs": rows})
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

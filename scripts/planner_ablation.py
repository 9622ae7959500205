"""Evaluate one trained checkpoint under several planner settings:
`python -m scripts.planner_ablation RUN_DIR --variants "planner.ensemble=split" "planner.value=min
planner.horizon=5" ... [--no-plan-too] [--episodes N] [--step S] --out results.json`.

Each variant is a space-separated list of `planner.*` / `abstain.*` overrides ("" = the run's own
config). Every variant plays the same evaluation seeds (those training's evaluations used), so the
figures differ only by how the same parameters act. Writes per-episode returns, mean, std and the
command to --out (atomic JSON).
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from scripts.bundle import evaluate_bundle, load_bundle
    from scripts.machine import machine_info, write_result
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
            rows.append(row)
            print(f"{row['variant'] or '(run config)':50s} {row['mean']:8.1f} ± {row['std']:.1f}")
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


if __name__ == "__main__":
    sys.exit(main())

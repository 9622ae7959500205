"""Export a run for evaluation and visualization: `python -m scripts.export RUN_DIR OUT [--step N]
[--obs-sample N]`.

Writes OUT/params.npz (the params pytree, no optimizer state, no pickle), OUT/config.yaml (the
resolved config), OUT/meta.json, OUT/obs_sample.npz (up to N replay observations, default 20000,
for the decoder probe of scripts.visualize; 0 = none) and OUT/calibration.json when RUN_DIR has
one. `scripts.evaluate OUT` and `scripts.visualize OUT` accept the result like a run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--obs-sample", type=int, default=20000, help="replay observations kept")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from scripts.bundle import export_bundle
    from worldmodel.errors import UserError

    try:
        if args.obs_sample < 0:
            raise UserError(f"--obs-sample must be >= 0, got {args.obs_sample}")
        out = export_bundle(args.run_dir, args.out, step=args.step, obs_limit=args.obs_sample)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

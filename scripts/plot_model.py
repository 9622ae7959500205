"""Plot open-loop prediction error vs imagination horizon from scripts.visualize's arrays.

`python -m scripts.plot_model VIS.npz [VIS.npz ...] [--labels A B ...] [--out FILE.png]`.
Left: ||decoded imagined obs − real obs|| per imagined step h (mean ± std over the visualized
segments) with the probe's own reconstruction error dashed (the part of the error that is the
probe's, not the model's); right: the epistemic score (head disagreement) per step.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from worldmodel.errors import UserError


def load_curves(paths: list[Path], labels: list[str] | None) -> dict[str, dict]:
    """{label: {'errors', 'floor', 'scores'}} from visualize npz files (default label:
    '<env id> @ <checkpoint step>')."""
    if labels and len(labels) != len(paths):
        raise UserError(f"--labels needs one label per file ({len(paths)}), got {len(labels)}")
    curves = {}
    for i, path in enumerate(paths):
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"cannot read {path}: {err}") from err
        missing = {"errors", "scores"} - data.keys()
        if missing:
            raise UserError(f"{path} lacks {sorted(missing)}: not written by scripts.visualize")
        label = (
            labels[i] if labels else f"{data.get('env_id', path.stem)} @ {data.get('step', '?')}"
        )
        curves[str(label)] = {
            "errors": data["errors"],
            "floor": data.get("probe_errors"),
            "scores": data["scores"],
        }
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("npz", type=Path, nargs="+")
    parser.add_argument("--labels", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: <first>-error.png")
    args = parser.parse_args(argv)
    from scripts.plots import plot_model_error

    try:
        curves = load_curves(args.npz, args.labels)
        out = args.out or args.npz[0].with_name(args.npz[0].stem + "-error.png")
        plot_model_error(curves, out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

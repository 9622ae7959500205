"""Plot a continual-learning result: `python -m scripts.plot_continual scripts/results/continual_<env>_s<seed>.json`.

Two panels over env steps, one line per mode (adaptive / naive / frozen): the abstain rate of
each episode (the gate's calibrated score above its threshold; alpha dashed) and the episode
return; vertical lines at world switches (solid) and change alarms (dotted, per mode colour).
Writes the PNG beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def plot(result: dict, path: Path, alpha: float = 0.05) -> Path:
    from scripts.plots import pyplot

    plt = pyplot()
    fig, (ax_a, ax_r) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    colours = {"adaptive": "tab:blue", "naive": "tab:orange", "frozen": "tab:grey"}
    for mode, r in result["modes"].items():
        eps = [e for e in r["events"] if e["kind"] == "episode"]
        steps = [e["step"] for e in eps]
        c = colours.get(mode)
        ax_a.plot(steps, [e["abstain_rate"] for e in eps], ".-", color=c, label=mode, lw=1, ms=3)
        ax_r.plot(steps, [e["return"] for e in eps], ".-", color=c, label=mode, lw=1, ms=3)
        for e in r["events"]:
            if e["kind"] == "alarm":
                for ax in (ax_a, ax_r):
                    ax.axvline(e["step"], color=c, ls=":", lw=1)
    first = next(iter(result["modes"].values()))
    for ph in first["phases"][1:]:
        for ax in (ax_a, ax_r):
            ax.axvline(ph["switch_step"], color="k", lw=1)
        ax_a.text(
            ph["switch_step"], 1.02, ph["world"], fontsize=8, transform=ax_a.get_xaxis_transform()
        )
    ax_a.axhline(alpha, color="tab:red", ls="--", lw=1, label=f"alpha = {alpha}")
    ax_a.set_ylabel("abstain rate per episode")
    ax_r.set_ylabel("episode return")
    ax_r.set_xlabel("env steps")
    ax_a.legend(fontsize=8)
    ax_a.set_title(result.get("env", ""), pad=14)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    args = p.parse_args(argv)
    for f in args.results:
        print(plot(json.loads(f.read_text()), f.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plot functions shared by the scripts (host only, matplotlib with the Agg backend).

Each `plot_*` draws one figure from plain arrays and writes it to `path` (any format matplotlib
knows by the suffix), returning the path. Missing matplotlib is a UserError with the install hint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worldmodel.errors import UserError


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("plotting needs matplotlib: pip install matplotlib") from err
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def plot_reliability(nominal, empirical, path, *, label: str | None = None) -> Path:
    """Reliability diagram: empirical coverage (or frequency) vs nominal level, both (K,) in
    [0, 1], against the diagonal of perfect calibration."""
    nominal, empirical = np.asarray(nominal, float), np.asarray(empirical, float)
    if nominal.shape != empirical.shape or nominal.ndim != 1:
        raise ValueError(f"nominal {nominal.shape} and empirical {empirical.shape} must be (K,)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    ax.plot(nominal, empirical, "o-", lw=2, ms=4, label=label or "observed")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level", ylabel="empirical frequency")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_risk_coverage(coverage, risk, path, label: str | Sequence[str]) -> Path:
    """Risk–coverage curve(s): risk (error among the kept decisions) vs coverage (fraction kept,
    in [0, 1]) as the abstention threshold moves. coverage/risk are (K,) with `label` a string,
    or sequences of (K_i,) arrays with `label` a sequence of strings (one curve each)."""
    if isinstance(label, str):
        coverage, risk, label = [coverage], [risk], [label]
    if not (len(coverage) == len(risk) == len(label)):
        raise ValueError("coverage, risk and label need one entry per curve")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for c, r, name in zip(coverage, risk, label, strict=True):
        c, r = np.asarray(c, float), np.asarray(r, float)
        order = np.argsort(c)
        ax.plot(c[order], r[order], lw=2, label=name)
    ax.set(xlim=(0, 1), xlabel="coverage (fraction of decisions kept)", ylabel="risk")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _aggregate(curves: list[tuple[np.ndarray, np.ndarray]]):
    """Runs' (steps (T_i,), values (T_i,)) on a common grid: the steps all share, or (fewer than
    two shared) the union of steps inside the range all cover, interpolated. -> (grid, (R, G))."""
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
    if len(common) < 2:
        lo, hi = max(s.min() for s, _ in curves), min(s.max() for s, _ in curves)
        union = np.unique(np.concatenate([s for s, _ in curves]))
        common = union[(union >= lo) & (union <= hi)].tolist()
    grid = np.asarray(common, float)
    return grid, np.stack([np.interp(grid, s, v) for s, v in curves]) if len(grid) else None


def plot_learning_curves(
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path,
    *,
    band: str = "std",
    reference: Sequence[tuple[float, float]] = (),
    reference_label: str = "reference",
    ylabel: str = "evaluation return",
) -> Path:
    """Return vs env steps: per group (e.g. env id) a thin line per run, the mean across runs
    and a band (`band` = 'std': ±1 std, 'minmax': min to max, 'none'). A run is
    (steps (T,), returns (T,)). `reference` (step, return) points are drawn as crosses."""
    if band not in ("std", "minmax", "none"):
        raise UserError(f"band must be std, minmax or none, got {band!r}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(sorted(groups.items())):
        color = colors[i % len(colors)]
        for steps, values in runs:
            ax.plot(steps, values, color=color, alpha=0.3, lw=1)
        grid, stack = _aggregate([(np.asarray(s, float), np.asarray(v, float)) for s, v in runs])
        if stack is None:
            continue
        mean = stack.mean(0)
        n = len(runs)
        ax.plot(grid, mean, color=color, lw=2, label=f"{name} ({n} run{'s' if n > 1 else ''})")
        if n > 1 and band != "none":
            lo, hi = (
                (mean - stack.std(0), mean + stack.std(0))
                if band == "std"
                else (stack.min(0), stack.max(0))
            )
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
    if reference:
        ax.plot(*zip(*reference, strict=True), "kx", ms=7, label=reference_label)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel + ("" if band == "none" else f" (mean, band: {band})"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_model_error(curves: dict[str, dict], path) -> Path:
    """Open-loop prediction error and epistemic score vs imagination step.

    curves: {label: {'errors': (S, H+1), 'floor': (S, H+1) or None (probe reconstruction
    error of the real observations), 'scores': (S, H)}}, NaN where a segment ended early.
    Mean over segments with a ±1 std band; the probe floor is dashed.
    """
    plt = pyplot()
    fig, (ax_err, ax_score) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        for ax, key, x0 in ((ax_err, "errors", 0), (ax_score, "scores", 1)):
            values = np.asarray(c[key], float)
            h = np.arange(x0, x0 + values.shape[1])
            mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            ax.plot(h, mean, color=color, lw=2, label=name)
            ax.fill_between(h, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        if c.get("floor") is not None:
            floor = np.nanmean(np.asarray(c["floor"], float), 0)
            ax_err.plot(
                np.arange(len(floor)), floor, color=color, ls="--", lw=1, label="probe floor"
            )
    ax_err.set(xlabel="imagined step h", ylabel="||decoded imagined obs − real obs||")
    ax_score.set(xlabel="imagined step h", ylabel="epistemic score (head disagreement)")
    for ax in (ax_err, ax_score):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)

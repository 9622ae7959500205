"""Video-frame panels for scripts.visualize (host only): matplotlib figures drawn once per segment
to RGB arrays, with a cursor painted per frame (cheap), and text labels on rendered frames.

Every panel is (height, width, 3) uint8. x axes are the imagined step h = 0..H.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CURSOR = np.array([220, 30, 30], np.uint8)


@dataclasses.dataclass(frozen=True)
class Panel:
    """A drawn figure and, per axes, its pixel rows (top, bottom) and the column of each h."""

    image: np.ndarray  # (height, width, 3) uint8
    cursors: tuple[tuple[int, int, np.ndarray], ...]

    def at(self, h: int) -> np.ndarray:
        """Copy of the image with a vertical cursor line at imagined step h in every axes."""
        out = self.image.copy()
        for top, bottom, columns in self.cursors:
            col = int(np.clip(columns[min(h, len(columns) - 1)], 0, out.shape[1] - 2))
            out[top:bottom, col : col + 2] = CURSOR
        return out


def _figure(width: int, height: int):
    """An Agg figure of exactly width x height pixels; fonts scale with the width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = width / 6.4  # a 6.4-inch-wide figure at every pixel size
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _panel(fig, axes, num_h: int, width: int, height: int) -> Panel:
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    image = np.full((height, width, 3), 255, np.uint8)  # pad/crop the rounding of inches
    h, w = min(height, rgba.shape[0]), min(width, rgba.shape[1])
    image[:h, :w] = rgba[:h, :w, :3]
    cursors = []
    for ax in axes:
        x = ax.transData.transform(np.stack([np.arange(num_h), np.zeros(num_h)], 1))[:, 0]
        bbox = ax.bbox  # display coordinates, origin at the bottom left
        top, bottom = int(height - bbox.y1), int(height - bbox.y0)
        cursors.append((max(top, 0), min(bottom, height), np.round(x).astype(int)))
    return Panel(image=image, cursors=tuple(cursors))


def strip_panel(
    scores: np.ndarray,
    errors: np.ndarray,
    probe_errors: np.ndarray | None,
    *,
    threshold: float | None,
    width: int,
    height: int,
    title: str = "",
    real_scores: np.ndarray | None = None,
    score_label: str = "imagined",
    real_label: str = "gate, real",
    threshold_label: str = "calibrated threshold",
    same_scale: bool = True,
) -> Panel:
    """Two stacked strips over h = 0..H: the epistemic score of each imagined transition
    (scores (H,), the score of h -> h+1 drawn at h+1; `real_scores` (H,), the abstention gate's
    score at the real decisions, drawn beside it when given) with the calibrated `threshold` as
    a horizontal line when given (gate score and threshold on a right-hand axis unless
    `same_scale`), and the prediction error (errors (H+1,)) with the probe's own
    reconstruction error (probe_errors (H+1,)) dashed. NaN entries (segment ended) are gaps."""
    num_h = len(errors)
    fig = _figure(width, height)
    ax_s, ax_e = fig.subplots(2, 1, sharex=True)
    x = np.arange(1, num_h)
    ax_s.plot(x, scores, "o-", ms=2, lw=1.2, color="tab:purple", label=score_label)
    # The gate score and its threshold on a right-hand axis when not on the imagined scale.
    ax_g = ax_s if same_scale else ax_s.twinx()
    if real_scores is not None and np.isfinite(real_scores).any():
        ax_g.plot(x, real_scores, lw=1, color="0.5", label=real_label)
    if threshold is not None and np.isfinite(threshold):
        ax_g.axhline(threshold, color="tab:red", ls="--", lw=1, label=threshold_label)
    if ax_g is not ax_s:  # grey ticks: the legend names the grey and red lines
        ax_g.tick_params(labelsize=6, colors="0.4")
    axes = [ax_s] if ax_g is ax_s else [ax_s, ax_g]
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    ax_s.legend(handles=handles, loc="upper left", fontsize=6, frameon=False)
    ax_s.set_ylabel("epistemic\nscore", fontsize=7)
    ax_e.plot(np.arange(num_h), errors, "o-", ms=2, lw=1.2, color="tab:blue", label="imagined")
    if probe_errors is not None:
        ax_e.plot(np.arange(num_h), probe_errors, ls="--", lw=1, color="0.5", label="probe floor")
    ax_e.legend(loc="upper left", fontsize=6, frameon=False)
    ax_e.set_ylabel("‖obs error‖", fontsize=7)
    ax_e.set_xlabel("imagined step h", fontsize=7)
    ax_e.set_xlim(-0.5, num_h - 0.5)
    for ax in (ax_s, ax_e):
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    if title:
        ax_s.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return _panel(fig, (ax_s, ax_e), num_h, width, height)


def channel_panel(
    real: np.ndarray, imagined: np.ndarray, *, width: int, height: int, max_channels: int = 12
) -> Panel:
    """Observation channels over h: real (H+1, D) solid, decoded imagined (H+1, D) dashed, one
    small axes per channel (the first `max_channels`), for tasks whose observations cannot be
    rendered as simulator states."""
    num_h, dims = real.shape
    shown = min(dims, max_channels)
    cols = int(np.ceil(np.sqrt(shown * width / max(height, 1))))
    cols = max(1, min(cols, shown))
    rows = int(np.ceil(shown / cols))
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    h = np.arange(num_h)
    for d, ax in enumerate(axes):
        if d >= shown:
            ax.set_axis_off()
            continue
        ax.plot(h, real[:, d], color="k", lw=1.2, label="real")
        ax.plot(h, imagined[:, d], color="tab:orange", ls="--", lw=1.2, label="imagined")
        ax.set_title(f"obs[{d}]", fontsize=7, pad=2)
        ax.tick_params(labelsize=5)
        ax.set_xlim(-0.5, num_h - 0.5)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=5, loc="best", frameon=False)
    fig.tight_layout(pad=0.3)
    return _panel(fig, axes[:shown], num_h, width, height)


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """Frame (H, W, 3) uint8 with `text` in its top-left corner (skipped below 128 px)."""
    if frame.shape[0] < 128:
        return frame
    from PIL import Image, ImageDraw, ImageFont

    try:  # a scalable font (Pillow >= 10.1 with FreeType), about 1/30 of the frame height
        font = ImageFont.load_default(size=max(10, frame.shape[0] // 30))
    except (TypeError, OSError):
        font = ImageFont.load_default()
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((6, 4), text, font=font)
    draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)

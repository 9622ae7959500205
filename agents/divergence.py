"""Stop training on a non-finite loss before anything non-finite reaches a checkpoint (host).

The trainer calls `check_finite` when it fetches metrics (log time) and before every save; a
NaN in the parameters makes every later loss NaN, so the check at save time guards the files.
"""

from __future__ import annotations

import math

import jax

from worldmodel.errors import UserError

_KEYS = ("loss", "pi_loss", "grad_norm")  # scalar metrics of the update that must be finite


class TrainingDiverged(UserError):
    """The update produced a non-finite loss; the last good checkpoint is left untouched."""


def check_finite(metrics: dict | None, env_step: int, last_checkpoint: int | None) -> None:
    """Raise TrainingDiverged (one line) when a metric in `_KEYS` of `metrics` is not finite.

    metrics: the latest update's scalar metrics (device or host values), or None before the
    first update. last_checkpoint: the newest saved step, named in the message.
    """
    if metrics is None:
        return
    values = jax.device_get({k: metrics[k] for k in _KEYS if k in metrics})
    bad = sorted(k for k, v in values.items() if not math.isfinite(float(v)))
    if bad:
        kept = (
            f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged at env step {env_step}: non-finite {', '.join(bad)}; {kept} "
            "(lower optim.lr or check the env's rewards)"
        )

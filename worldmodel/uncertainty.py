"""Epistemic scores of the dynamics ensemble, their normalisation and split-conformal calibration.

Two per-step scores, both ~1 in distribution after normalisation (so one threshold means the
same across tasks and latent sizes):
  epistemic(z, a)        = mean_d Var_k[f_k(z, a)_d] / epi_scale_d        (before acting: heads disagree)
  surprise(z, a, z_next) = mean_d (z_next_d - mean_k f_k_d)^2 / (Var_k_d + res_scale_d)
                                                                         (after the transition)
`Var_k` is the epistemic part (disagreement of the K heads); `res_scale` is the aleatoric part:
the residual variance left in distribution once the heads' spread is accounted for. They are
kept apart and only combined in the surprise denominator, as a predictive variance.
Shapes: z (..., L), a (..., A); scores (...,). Pure JAX except the numpy helpers marked host.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from worldmodel.errors import ConfigError
from worldmodel.model import WorldModel

SCORE_KINDS = ("epistemic", "surprise", "max")
_FLOOR = 1e-8


@flax.struct.dataclass
class Calibration:
    """Normalisers and the abstain threshold; travels with the checkpoint.

    epi_scale (L,), res_scale (L,): per-dim in-distribution disagreement and residual variance,
    fit on training data. threshold (): the split-conformal (1 - alpha) quantile of the score on
    held-out transitions (inf = not calibrated: nothing abstains). n (): calibration set size.
    """

    epi_scale: jax.Array
    res_scale: jax.Array
    threshold: jax.Array
    n: jax.Array
    alpha: float = flax.struct.field(pytree_node=False, default=0.05)

    @property
    def calibrated(self) -> bool:
        return bool(np.isfinite(np.asarray(self.threshold)))

    def to_json(self) -> dict:
        """Host: plain-JSON form (for checkpoint meta and the export bundle)."""
        return {
            "epi_scale": np.asarray(self.epi_scale).tolist(),
            "res_scale": np.asarray(self.res_scale).tolist(),
            "threshold": float(self.threshold) if self.calibrated else None,
            "n": int(self.n),
            "alpha": float(self.alpha),
        }

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        thr = d["threshold"]
        return cls(
            epi_scale=jnp.asarray(d["epi_scale"], jnp.float32),
            res_scale=jnp.asarray(d["res_scale"], jnp.float32),
            threshold=jnp.asarray(np.inf if thr is None else thr, jnp.float32),
            n=jnp.asarray(d["n"], jnp.int32),
            alpha=float(d["alpha"]),
        )


def init_calibration(latent_dim: int, *, alpha: float = 0.05) -> Calibration:
    """Uncalibrated: unit scales, threshold inf (never abstains), n = 0."""
    check_alpha(alpha)
    ones = jnp.ones((latent_dim,), jnp.float32)
    return Calibration(ones, ones, jnp.asarray(np.inf, jnp.float32), jnp.asarray(0), alpha)


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"abstain.alpha must be in (0, 1), got {alpha}; e.g. abstain.alpha=0.05")


def check_kind(kind: str) -> None:
    if kind not in SCORE_KINDS:
        raise ConfigError(f"abstain.score must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")


# ----------------------------------------------------------------------------- scores (device)
def head_moments(model: WorldModel, params: dict, z, a):
    """(mean (..., L), variance (..., L)) of the K heads' next latents."""
    zk = model.next_all(params, z, a)
    return zk.mean(axis=0), zk.var(axis=0)


def epistemic(model: WorldModel, params: dict, calib: Calibration, z, a) -> jax.Array:
    """Normalised disagreement (...,): ~1 in distribution, large where the heads diverge."""
    _, var = head_moments(model, params, z, a)
    return (var / calib.epi_scale).mean(axis=-1)


def surprise(model: WorldModel, params: dict, calib: Calibration, z, a, z_next) -> jax.Array:
    """Normalised squared error (...,) of the observed next latent under the ensemble."""
    mean, var = head_moments(model, params, z, a)
    return ((z_next - mean) ** 2 / (var + calib.res_scale)).mean(axis=-1)


def step_scores(model: WorldModel, params: dict, calib: Calibration, z, a, z_next) -> dict:
    """All three per-step scores of transitions (z, a) -> z_next: {'epistemic','surprise','max'}."""
    mean, var = head_moments(model, params, z, a)
    e = (var / calib.epi_scale).mean(axis=-1)
    s = ((z_next - mean) ** 2 / (var + calib.res_scale)).mean(axis=-1)
    return {"epistemic": e, "surprise": s, "max": jnp.maximum(e, s)}


def fit_scales(model: WorldModel, params: dict, obs, action, next_obs) -> tuple:
    """(epi_scale (L,), res_scale (L,)) from training transitions obs (B, D), action (B, A).

    epi_scale = E[Var_k]; res_scale = max(E[(z' - mean)^2] - E[Var_k], floor): the aleatoric
    residual. Both are floored relative to their average so no latent dim divides by ~0.
    """
    z, z_next = model.encode(params, obs), model.encode(params, next_obs)
    mean, var = head_moments(model, params, z, action)
    epi = var.mean(axis=0)
    res = jnp.maximum(((z_next - mean) ** 2).mean(axis=0) - epi, 0.0)
    epi = jnp.maximum(epi, 0.01 * epi.mean() + _FLOOR)
    res = jnp.maximum(res, 0.01 * res.mean() + _FLOOR)
    return epi, res


def interval_z(model: WorldModel, params: dict, calib: Calibration, z, a, z_next) -> jax.Array:
    """Per-dim standardised residual |z' - mean| / sqrt(Var_k + res_scale) (..., L).

    A central predictive interval mean ± c·sd covers z'_d exactly when this is <= c.
    """
    mean, var = head_moments(model, params, z, a)
    return jnp.abs(z_next - mean) / jnp.sqrt(var + calib.res_scale)


# ----------------------------------------------------------------------------- conformal (host)
def conformal_threshold(scores, alpha: float) -> float:
    """Split-conformal threshold: the ceil((n+1)(1-alpha))-th smallest of n held-out scores.

    For a fresh score exchangeable with the n, P(score > threshold) <= alpha (and >= alpha -
    1/(n+1) when ties have probability 0). Too few scores for that rank -> inf (never abstain).
    """
    check_alpha(alpha)
    s = np.sort(np.asarray(scores, np.float64).ravel())
    s = s[np.isfinite(s)]
    n = len(s)
    k = math.ceil((n + 1) * (1.0 - alpha))
    return float(s[k - 1]) if 1 <= k <= n else math.inf


def window_mean(scores: np.ndarray, first: np.ndarray, window: int) -> np.ndarray:
    """Host: trailing mean over the last `window` steps of the same episode (T,) -> (T,).

    `first[t]` marks the first step of an episode; early steps average what exists so far.
    This is the same window `agents.abstain` keeps online.
    """
    scores = np.asarray(scores, np.float64)
    out = np.empty_like(scores)
    start = 0
    for t in range(len(scores)):
        if first[t]:
            start = t
        lo = max(start, t - window + 1)
        out[t] = scores[lo : t + 1].mean()
    return out


# ----------------------------------------------------------------------------- predictions
@flax.struct.dataclass
class Prediction:
    """A model prediction that carries its own doubt; build only with `predict`.

    next_z (..., L) ensemble mean; score (...,) epistemic score; threshold () the calibrated
    threshold; abstained (...,) bool = score > threshold. `confident()` (host) refuses to hand
    out an abstained prediction.
    """

    next_z: jax.Array
    score: jax.Array
    threshold: jax.Array
    abstained: jax.Array

    def confident(self) -> np.ndarray:
        """Host: next_z as numpy; raises Abstained if any element abstained."""
        abstained = np.asarray(self.abstained)
        if abstained.any():
            worst = float(np.max(np.asarray(self.score)))
            raise Abstained(
                f"{int(abstained.sum())} prediction(s) abstained: score {worst:.3g} > "
                f"threshold {float(self.threshold):.3g}"
            )
        return np.asarray(self.next_z)


class Abstained(RuntimeError):
    """Raised when a caller asks for a confident value from an abstained prediction."""


def predict(model: WorldModel, params: dict, calib: Calibration, z, a) -> Prediction:
    """One-step latent prediction with its epistemic score and abstain flag."""
    mean, var = head_moments(model, params, z, a)
    score = (var / calib.epi_scale).mean(axis=-1)
    return Prediction(mean, score, calib.threshold, score > calib.threshold)

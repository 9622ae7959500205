"""Epistemic scores of the dynamics ensembles, their normalisation and split-conformal calibration.

Two per-step scores, each the mean of a latent part and an observation part, all ~1 in
distribution after normalisation (so one threshold means the same across tasks and sizes):
  epistemic(o, a)      latent: mean_l Var_k[f_k(z, a)_l] / epi_scale_l     (heads disagree, before acting)
                       obs:    mean_d Var_k[mu_k(o, a)_d] / obs_epi_scale_d
  surprise(o, a, o')   latent: mean_l (z'_l - mean_k f_k_l)^2 / (Var_k f_k_l + res_scale_l)
                       obs:    mean_d (y_d - mean_k mu_k_d)^2 / (Var_k mu_k_d + mean_k s2_k_d)
                                                                   (after the transition)
z = encode(o), y = symlog(o') - symlog(o); mu_k, s2_k: observation head k's mean and variance
(see WorldModel.obs_moments). Var_k is the epistemic part (disagreement of K heads);
res_scale and s2_k are the aleatoric part (noise left in distribution). They are kept apart
and only added in the surprise denominator, as a predictive variance.
Shapes: obs (..., D), a (..., A); scores (...,). Pure JAX except the numpy helpers marked host.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from worldmodel.errors import ConfigError
from worldmodel.model import WorldModel

SCORE_KINDS = ("epistemic", "surprise", "max", "bias", "either")
BIAS_KINDS = ("bias", "either")  # kinds that need the windowed bias test (worldmodel.bias)
_FLOOR = 1e-8


@flax.struct.dataclass
class Calibration:
    """Normalisers and the abstain threshold; travels with the checkpoint.

    epi_scale (L,), res_scale (L,), obs_epi_scale (D,): per-dim in-distribution disagreement and
    residual variance, fit on training data. threshold (): the split-conformal (1 - alpha)
    quantile of the score on held-out transitions (inf = not calibrated: nothing abstains).
    n (): calibration set size. For the scores 'bias' and 'either' (agents.abstain):
    bias_mean (M,), bias_prec (M, M) the windowed bias test's in-distribution mean and precision
    (worldmodel.bias, M = D + L), and scale (2, 2): the normaliser of [max, bias] in the first
    `window` decisions of an episode (row 0) and after them (row 1). Defaults: 0, I, 1.
    """

    epi_scale: jax.Array
    res_scale: jax.Array
    obs_epi_scale: jax.Array
    threshold: jax.Array
    n: jax.Array
    bias_mean: jax.Array
    bias_prec: jax.Array
    scale: jax.Array
    alpha: float = flax.struct.field(pytree_node=False, default=0.05)

    @property
    def calibrated(self) -> bool:
        return bool(np.isfinite(np.asarray(self.threshold)))

    def to_json(self) -> dict:
        """Host: plain-JSON form (for checkpoint meta and the export bundle)."""
        return {
            "epi_scale": np.asarray(self.epi_scale).tolist(),
            "res_scale": np.asarray(self.res_scale).tolist(),
            "obs_epi_scale": np.asarray(self.obs_epi_scale).tolist(),
            "threshold": float(self.threshold) if self.calibrated else None,
            "n": int(self.n),
            "bias_mean": np.asarray(self.bias_mean).tolist(),
            "bias_prec": np.asarray(self.bias_prec).tolist(),
            "scale": np.asarray(self.scale).tolist(),
            "alpha": float(self.alpha),
        }

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        """Inverse of to_json; a calibration saved before the bias test gets its defaults."""
        thr = d["threshold"]
        f32 = lambda k: jnp.asarray(d[k], jnp.float32)  # noqa: E731
        m = len(d["obs_epi_scale"]) + len(d["epi_scale"])
        return cls(
            epi_scale=f32("epi_scale"),
            res_scale=f32("res_scale"),
            obs_epi_scale=f32("obs_epi_scale"),
            threshold=jnp.asarray(np.inf if thr is None else thr, jnp.float32),
            n=jnp.asarray(d["n"], jnp.int32),
            bias_mean=jnp.asarray(d.get("bias_mean", np.zeros(m)), jnp.float32),
            bias_prec=jnp.asarray(d.get("bias_prec", np.eye(m)), jnp.float32),
            scale=jnp.asarray(d.get("scale", np.ones((2, 2))), jnp.float32),
            alpha=float(d["alpha"]),
        )


def init_calibration(latent_dim: int, obs_dim: int, *, alpha: float = 0.05) -> Calibration:
    """Uncalibrated: unit scales, threshold inf (never abstains), n = 0, bias test 0 / I."""
    check_alpha(alpha)
    ones = jnp.ones((latent_dim,), jnp.float32)
    inf = jnp.asarray(np.inf, jnp.float32)
    m = latent_dim + obs_dim
    return Calibration(
        ones, ones, jnp.ones((obs_dim,)), inf, jnp.asarray(0, jnp.int32),
        jnp.zeros((m,)), jnp.eye(m), jnp.ones((2, 2)), alpha,
    )  # fmt: skip


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


def epistemic(model: WorldModel, params: dict, calib: Calibration, obs, a) -> jax.Array:
    """Normalised disagreement (...,) before acting: ~1 in distribution, large where heads diverge."""
    _, var = head_moments(model, params, model.encode(params, obs), a)
    o_mean, _ = model.obs_moments(params, obs, a)
    e_lat = (var / calib.epi_scale).mean(axis=-1)
    e_obs = (o_mean.var(axis=0) / calib.obs_epi_scale).mean(axis=-1)
    return 0.5 * (e_lat + e_obs)


def step_scores(model: WorldModel, params: dict, calib: Calibration, obs, a, next_obs) -> dict:
    """Scores of transitions obs (..., D), a (..., A) -> next_obs (..., D).

    {'epistemic', 'surprise', 'max'} (...,) and their parts 'epistemic_latent', 'epistemic_obs',
    'surprise_latent', 'surprise_obs' (see the module docstring), and 'residual' (..., D + L):
    the signed standardised residuals, the input of worldmodel.bias — observation part
    (y - mean_k mu_k) / sqrt(Var_k mu_k + mean_k s2_k), latent part (z' - mean_k f_k) /
    sqrt(Var_k f_k + res_scale), each ~N(0, 1) per dim when the model is right and drifting to one
    side when the world's dynamics differ. The surprise parts are their squares' means; the central
    predictive interval mean ± c·sd covers y_d exactly when |observation part_d| <= c.
    'obs_target' (..., D): y, what the observation heads predict; 'obs_error' (..., D): y - mean_k
    mu_k, unscaled (comparable across models on the same transitions).
    """
    z, z_next = model.encode(params, obs), model.encode(params, next_obs)
    mean, var = head_moments(model, params, z, a)
    o_mean, o_var = model.obs_moments(params, obs, a)
    o_epi, o_alea, o_mu = o_mean.var(axis=0), o_var.mean(axis=0), o_mean.mean(axis=0)
    y = model.obs_target(obs, next_obs)
    r_obs = (y - o_mu) / jnp.sqrt(o_epi + o_alea)
    r_lat = (z_next - mean) / jnp.sqrt(var + calib.res_scale)
    parts = {
        "epistemic_latent": (var / calib.epi_scale).mean(axis=-1),
        "epistemic_obs": (o_epi / calib.obs_epi_scale).mean(axis=-1),
        "surprise_latent": (r_lat**2).mean(axis=-1),
        "surprise_obs": (r_obs**2).mean(axis=-1),
    }
    e = 0.5 * (parts["epistemic_latent"] + parts["epistemic_obs"])
    s = 0.5 * (parts["surprise_latent"] + parts["surprise_obs"])
    residual = jnp.concatenate([r_obs, r_lat], axis=-1)
    return {"epistemic": e, "surprise": s, "max": jnp.maximum(e, s), **parts,
            "residual": residual, "obs_target": y, "obs_error": y - o_mu}  # fmt: skip


def fit_scales(model: WorldModel, params: dict, obs, action, next_obs) -> tuple:
    """(epi_scale (L,), res_scale (L,), obs_epi_scale (D,)) from training transitions (B, ...).

    epi_scale = E[Var_k]; res_scale = max(E[(z' - mean)^2] - E[Var_k], floor): the aleatoric
    residual; obs_epi_scale = E[Var_k mu_k]. Each is floored relative to its average so no
    dimension divides by ~0.
    """
    z, z_next = model.encode(params, obs), model.encode(params, next_obs)
    mean, var = head_moments(model, params, z, action)
    o_mean, _ = model.obs_moments(params, obs, action)
    floor = lambda x: jnp.maximum(x, 0.01 * x.mean() + _FLOOR)  # noqa: E731
    epi = var.mean(axis=0)
    res = jnp.maximum(((z_next - mean) ** 2).mean(axis=0) - epi, 0.0)
    return floor(epi), floor(res), floor(o_mean.var(axis=0).mean(axis=0))


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
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)  # no float round-up of an exact integer
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


def predict(model: WorldModel, params: dict, calib: Calibration, obs, a) -> Prediction:
    """One-step latent prediction from obs (..., D), a (..., A) with its epistemic score and
    abstain flag."""
    mean, _ = head_moments(model, params, model.encode(params, obs), a)
    score = epistemic(model, params, calib, obs, a)
    return Prediction(mean, score, calib.threshold, score > calib.threshold)


def imagine(model: WorldModel, params: dict, calib: Calibration, obs, actions):
    """Open-loop imagination from obs (B, D) with actions (B, k, A), ensemble-mean latents.

    Returns (z_k (B, L) the imagined latent after k steps, trajectory score (B,): the max over
    the k steps of the normalised latent disagreement — the multi-step epistemic score).
    """

    def body(z, a):
        mean, var = head_moments(model, params, z, a)
        return mean, (var / calib.epi_scale).mean(axis=-1)

    z, scores = jax.lax.scan(body, model.encode(params, obs), jnp.swapaxes(actions, 0, 1))
    return z, scores.max(axis=0)

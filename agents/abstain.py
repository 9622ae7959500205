"""The abstention gate: score each decision, compare with the calibrated threshold, fall back.

Device side (pure, called inside the jitted `act`). At decision t in env i the step score is
  epistemic(o_t, a_t)                  (the heads disagree on the action the planner chose), or
  surprise(o_{t-1}, a_{t-1}, o_t)      (the last transition left the model's predictive band; 0 at
                                        an episode's first step), or their max (`score: max`),
averaged over the last `window` decisions of the episode. `score: bias` is worldmodel.bias's
Hotelling statistic of the signed residuals of the episode's last `window` transitions (sees a
world that drifts the model's errors one way, which squared scores average away; 0 at an
episode's first step); `score: either` is max(max-score / scale_max, bias / scale_bias), each
test divided by its own in-distribution (1 - alpha) quantile, separately for the first `window`
decisions of an episode (the reset transient) and the rest, so one conformal threshold covers
both tests and both phases. Above the threshold the agent abstains and the fallback acts:
'hold' (zero action), 'prior' (policy-prior mean, no planning) or 'stop' (zero action and
`info['stop']`: the host ends the episode and reports it). `decision_scores` (host) rebuilds the
same numbers offline from stored transitions, so the threshold is calibrated on exactly what
the gate compares.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from worldmodel.bias import BiasTest, bias_scores
from worldmodel.errors import ConfigError
from worldmodel.uncertainty import (
    BIAS_KINDS,
    Calibration,
    check_alpha,
    check_kind,
    epistemic,
    step_scores,
    window_mean,
)

FALLBACKS = ("hold", "prior", "stop")


@dataclasses.dataclass(frozen=True)
class AbstainConfig:
    """The `abstain` config slice (see configs/defaults.yaml for each key's meaning)."""

    enabled: bool = False
    alpha: float = 0.05
    score: str = "either"
    window: int = 10
    fallback: str = "prior"
    holdout: float = 0.1
    calib_every: int = 5000
    calib_size: int = 20000
    fit_size: int = 4096

    def __post_init__(self):
        check_alpha(self.alpha)
        check_kind(self.score)
        if self.fallback not in FALLBACKS:
            raise ConfigError(
                f"abstain.fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}"
            )
        if self.window < 1:
            raise ConfigError(f"abstain.window must be >= 1, got {self.window}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"abstain.holdout must be in [0, 1), got {self.holdout}")


def gate(model, params, calib: Calibration, cfg: AbstainConfig, prev: dict, obs, action, first):
    """Score a batch of decisions and decide whether to abstain.

    prev: {'obs' (N, D), 'a' (N, A), 'win' (N, W), 'count' (N,), 'res' (N, W, M) the last
    transitions' residuals (M = D + L for the bias kinds, else 0), 'rcount' (N,) how many} from
    the previous decision; obs (N, D), action (N, A) the planner's choice, first (N,) bool.
    Returns (abstained (N,) bool, score (N,) the gate's decision score, step score (N,), prev'
    for the next call; the caller sets prev'['a'] to the action actually taken).
    """
    kind = "max" if cfg.score in BIAS_KINDS else cfg.score
    e = epistemic(model, params, calib, obs, action)
    if kind == "epistemic":
        s, residual = jnp.zeros_like(e), None
    else:  # the surprise of the transition t-1 -> t
        last = step_scores(model, params, calib, prev["obs"], prev["a"], obs)
        s, residual = jnp.where(first, 0.0, last["surprise"]), last["residual"]
    step = {"epistemic": e, "surprise": s, "max": jnp.maximum(e, s)}[kind]
    W = cfg.window
    win = jnp.where(first[:, None], 0.0, prev["win"])
    count = jnp.where(first, 0, prev["count"])
    win = jnp.concatenate([win[:, 1:], step[:, None]], axis=1)
    count = jnp.minimum(count + 1, W)
    live = jnp.arange(W)[None, :] >= (W - count)[:, None]
    score = (win * live).sum(axis=1) / count
    res, rcount = prev["res"], prev["rcount"]
    if cfg.score in BIAS_KINDS:
        # push the residual of t-1 -> t (none at an episode's first decision)
        res = jnp.where(
            first[:, None, None], 0.0, jnp.concatenate([res[:, 1:], residual[:, None]], 1)
        )
        rcount = jnp.where(first, 0, jnp.minimum(rcount + 1, W))
        d = res.sum(axis=1) / jnp.sqrt(jnp.maximum(rcount, 1))[:, None] - calib.bias_mean
        b = jnp.einsum("nd,de,ne->n", d, calib.bias_prec, d) / d.shape[-1]
        b = jnp.where(rcount > 0, b, 0.0)
        scale = calib.scale[(rcount >= W).astype(jnp.int32)]  # (N, 2): [max, bias] per phase
        score = (
            b / scale[:, 1]
            if cfg.score == "bias"
            else jnp.maximum(score / scale[:, 0], b / scale[:, 1])
        )
    abstained = jnp.logical_and(cfg.enabled, score > calib.threshold)
    new_prev = {"obs": obs, "a": action, "win": win, "count": count, "res": res, "rcount": rcount}
    return abstained, score, step, new_prev


def init_prev(num_envs: int, obs_dim: int, act_dim: int, window: int, res_dim: int = 0) -> dict:
    """The gate's carry before any decision; res_dim = D + L for the bias kinds, else 0."""
    return {
        "obs": jnp.zeros((num_envs, obs_dim)),
        "a": jnp.zeros((num_envs, act_dim)),
        "win": jnp.zeros((num_envs, window)),
        "count": jnp.zeros((num_envs,), jnp.int32),
        "res": jnp.zeros((num_envs, window, res_dim)),
        "rcount": jnp.zeros((num_envs,), jnp.int32),
    }


def fallback_action(model, params, cfg: AbstainConfig, z) -> jax.Array:
    """(N, A) action the fallback takes instead of the plan."""
    if cfg.fallback == "prior":
        return model.pi(params, z, key=jax.random.key(0))[2]  # the mean: no sampling
    return jnp.zeros((z.shape[0], model.act_dim))


def decision_scores(
    transition: dict, first: np.ndarray, *, kind: str, window: int, calib: Calibration | None = None
) -> np.ndarray:
    """Host: the gate's decision score at every decision of a stored stream.

    transition: per-step 'epistemic' e_t = e(z_t, a_t) and 'surprise' s_t = s(z_t, a_t, z_{t+1})
    (T,), and for the bias kinds 'residual_z' (T, D + L) of the same transitions, in time order;
    first (T,) marks episode starts; calib supplies the bias test and scales (bias kinds only).
    The gate at decision t sees e_t and s_{t-1} (0 where first[t]), and for the bias test the
    residuals of the episode's transitions before t.
    """
    parts = decision_parts(
        transition, first, window=window, calib=calib if kind in BIAS_KINDS else None
    )
    if kind not in BIAS_KINDS:
        return window_mean(parts[kind], first, window)
    scale = np.asarray(calib.scale, np.float64)[parts["late"].astype(int)]  # (T, 2)
    bias = parts["bias"] / scale[:, 1]
    return bias if kind == "bias" else np.maximum(parts["max_w"] / scale[:, 0], bias)


def decision_parts(
    transition: dict, first, *, window: int, calib: Calibration | None = None
) -> dict:
    """Host: the per-decision inputs of the gate (T,): 'epistemic', 'surprise' (of t-1 -> t),
    'max'; with calib also 'max_w' (the windowed max score), 'bias' (unscaled T²/M) and 'late'
    (bool: at least `window` transitions of the episode before t)."""
    first = np.asarray(first, bool)
    e = np.asarray(transition["epistemic"], np.float64)
    s_prev = np.concatenate([[0.0], np.asarray(transition["surprise"], np.float64)[:-1]])
    s_prev = np.where(first, 0.0, s_prev)
    out = {"epistemic": e, "surprise": s_prev, "max": np.maximum(e, s_prev)}
    if calib is None:
        return out
    test = BiasTest(
        np.asarray(calib.bias_mean, np.float64), np.asarray(calib.bias_prec, np.float64), window
    )
    b = bias_scores(test, transition["residual_z"], first)  # of the window ending at transition t
    t = np.arange(len(first))
    start = np.maximum.accumulate(np.where(first, t, 0))
    out["max_w"] = window_mean(out["max"], first, window)
    out["bias"] = np.where(first, 0.0, np.concatenate([[0.0], b[:-1]]))
    out["late"] = t - start >= window
    return out

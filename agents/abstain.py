"""The abstention gate: score each decision, compare with the calibrated threshold, fall back.

Device side (pure, called inside the jitted `act`). At decision t in env i the step score is
  epistemic(o_t, a_t)                  (the heads disagree on the action the planner chose), or
  surprise(o_{t-1}, a_{t-1}, o_t)      (the last transition left the model's predictive band; 0 at
                                        an episode's first step), or their max (`score: max`),
averaged over the last `window` decisions of the episode. Above the threshold the agent
abstains and the fallback acts: 'hold' (zero action), 'prior' (policy-prior mean, no planning)
or 'stop' (zero action and `info['stop']`: the host ends the episode and reports it).
`decision_scores` (host) rebuilds the same numbers offline from stored transitions, so the
threshold is calibrated on exactly what the gate compares.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from worldmodel.errors import ConfigError
from worldmodel.uncertainty import (
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
    score: str = "max"
    window: int = 1
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

    prev: {'obs' (N, D), 'a' (N, A), 'win' (N, W), 'count' (N,)} from the previous decision;
    obs (N, D), action (N, A) the planner's choice, first (N,) bool. Returns (abstained (N,)
    bool, score (N,) windowed, step score (N,), prev' for the next call; the caller sets
    prev'['a'] to the action actually taken).
    """
    e = epistemic(model, params, calib, obs, action)
    if cfg.score == "epistemic":
        s = jnp.zeros_like(e)
    else:  # the surprise of the transition t-1 -> t
        s = step_scores(model, params, calib, prev["obs"], prev["a"], obs)["surprise"]
        s = jnp.where(first, 0.0, s)
    step = {"epistemic": e, "surprise": s, "max": jnp.maximum(e, s)}[cfg.score]
    W = cfg.window
    win = jnp.where(first[:, None], 0.0, prev["win"])
    count = jnp.where(first, 0, prev["count"])
    win = jnp.concatenate([win[:, 1:], step[:, None]], axis=1)
    count = jnp.minimum(count + 1, W)
    live = jnp.arange(W)[None, :] >= (W - count)[:, None]
    score = (win * live).sum(axis=1) / count
    abstained = jnp.logical_and(cfg.enabled, score > calib.threshold)
    new_prev = {"obs": obs, "a": action, "win": win, "count": count}
    return abstained, score, step, new_prev


def init_prev(num_envs: int, obs_dim: int, act_dim: int, window: int) -> dict:
    return {
        "obs": jnp.zeros((num_envs, obs_dim)),
        "a": jnp.zeros((num_envs, act_dim)),
        "win": jnp.zeros((num_envs, window)),
        "count": jnp.zeros((num_envs,), jnp.int32),
    }


def fallback_action(model, params, cfg: AbstainConfig, z) -> jax.Array:
    """(N, A) action the fallback takes instead of the plan."""
    if cfg.fallback == "prior":
        return model.pi(params, z, key=jax.random.key(0))[2]  # the mean: no sampling
    return jnp.zeros((z.shape[0], model.act_dim))


def decision_scores(transition: dict, first: np.ndarray, *, kind: str, window: int) -> np.ndarray:
    """Host: the gate's windowed score at every decision of a stored stream.

    transition: per-step 'epistemic' e_t = e(z_t, a_t) and 'surprise' s_t = s(z_t, a_t, z_{t+1})
    (T,), in time order; first (T,) marks episode starts. The gate at decision t sees e_t and
    s_{t-1} (0 where first[t]).
    """
    e = np.asarray(transition["epistemic"], np.float64)
    s_prev = np.concatenate([[0.0], np.asarray(transition["surprise"], np.float64)[:-1]])
    s_prev = np.where(first, 0.0, s_prev)
    step = {"epistemic": e, "surprise": s_prev, "max": np.maximum(e, s_prev)}[kind]
    return window_mean(step, first, window)

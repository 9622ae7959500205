"""Calibrate the abstention threshold (host driver of jitted scoring).

`calibrate` fits the score normalisers on training transitions, scores held-out transitions the
model never trained on exactly as the gate would, and sets the split-conformal threshold, so
the in-distribution false-abstain rate is at most alpha. `score_transitions` is the jitted
per-transition scorer the OOD benchmark also uses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from agents.abstain import decision_scores
from worldmodel.uncertainty import (
    Calibration,
    conformal_threshold,
    fit_scales,
    residual_z,
    step_scores,
)

_CHUNK = 4096


@functools.partial(jax.jit, static_argnums=0)
def _score_chunk(model, params, calib, obs, action, next_obs):
    scores = step_scores(model, params, calib, obs, action, next_obs)
    r = residual_z(model, params, calib, obs, action, next_obs)  # (T, D + L), obs part first
    return scores, {"interval_z": jnp.abs(r[..., : obs.shape[-1]]), "residual_z": r}


def score_transitions(agent, params, calib: Calibration, obs, action, next_obs) -> dict:
    """Per-transition scores of obs (T, D), action (T, A), next_obs (T, D).

    Returns numpy {'epistemic','surprise','max', and their parts} (T,), 'interval_z' (T, D)
    and 'residual_z' (T, D + L) (standardised residuals, see worldmodel.uncertainty.interval_z
    and residual_z; interval_z is the observation part of residual_z, unsigned). Evaluated in
    fixed chunks (one compile).
    """
    T = len(obs)
    out: dict[str, list] = {}
    for lo in range(0, T, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        n = len(obs[sl])
        pad = functools.partial(_pad_to, n=_CHUNK)
        scores, extra = _score_chunk(
            agent.model, params, calib, pad(obs[sl]), pad(action[sl]), pad(next_obs[sl])
        )
        for k, v in {**scores, **extra}.items():
            out.setdefault(k, []).append(np.asarray(v)[:n])
    if not out:
        return {
            k: np.zeros(0) for k in ("epistemic", "surprise", "max", "interval_z", "residual_z")
        }
    return {k: np.concatenate(v) for k, v in out.items()}


def _pad_to(x, *, n: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.pad(x, [(0, n - len(x))] + [(0, 0)] * (x.ndim - 1))


@functools.partial(jax.jit, static_argnums=0)
def _fit(model, params, obs, action, next_obs):
    return fit_scales(model, params, obs, action, next_obs)


def fit_calibration_scales(agent, params, train: dict, *, alpha: float) -> Calibration:
    """Calibration with normalisers fit on training transitions; threshold still inf."""
    epi, res, obs_epi = _fit(agent.model, params, train["obs"], train["action"], train["next_obs"])
    inf = jnp.asarray(np.inf, jnp.float32)
    return Calibration(epi, res, obs_epi, inf, jnp.asarray(0, jnp.int32), alpha)


def calibrate(agent, params, train: dict, holdout: dict, *, kind: str, window: int, alpha: float):
    """Full calibration: normalisers from `train`, conformal threshold from `holdout`.

    train: obs (B, D), action (B, A), next_obs (B, D) — transitions the model trained on.
    holdout: obs, action, next_obs (T, ...), first (T,) — transitions it never trained on, in
    time order. Returns (Calibration, the held-out decision scores (T,)).
    """
    calib = fit_calibration_scales(agent, params, train, alpha=alpha)
    scores = score_transitions(
        agent, params, calib, holdout["obs"], holdout["action"], holdout["next_obs"]
    )
    decisions = decision_scores(scores, holdout["first"], kind=kind, window=window)
    threshold = conformal_threshold(decisions, alpha)
    calib = calib.replace(
        threshold=jnp.asarray(threshold, jnp.float32), n=jnp.asarray(len(decisions), jnp.int32)
    )
    return calib, decisions


class Calibrator:
    """Host: routes whole training episodes to a held-out set and recalibrates on a schedule.

    Every round(1 / cfg.holdout)-th episode after the seed phase is held out; its transitions go to replay marked held out, so the model
    never trains on them. With one env, a held-out episode is also acted greedily (as the
    deployed agent acts), so the calibration set matches deployment; with several envs the
    batch explores unless every env is in a held-out episode.
    """

    def __init__(self, agent, cfg, *, seed: int, num_envs: int):
        self.agent, self.cfg, self.seed = agent, cfg, seed
        self.held = np.zeros(num_envs, bool)
        self.started = 0  # episodes started while holding out was active
        self.calib = agent.init_calibration()
        self._hold_next = False

    def hold_next(self) -> None:
        """Hold out the next episode that starts, whatever the count says: after a detected
        change the new world needs held-out data before it can be calibrated (with holdout 0.1,
        every 10th episode, and 250-step episodes, the 4 episodes of 1000 steps would otherwise
        hold none out in about 6 of 10 cases)."""
        self._hold_next = True

    def start_episodes(self, first: np.ndarray, *, active: bool) -> None:
        """Set the held-out flag of envs whose obs begins a new episode: every
        round(1 / holdout)-th episode started while `active` is held out (counted, not drawn,
        so even a short run with long episodes gets its share). Nothing is held out while not
        `active` (the seed phase), so training always has data to start from."""
        # the count (saved with the checkpoint) makes a resumed run hold out the same episodes
        period = round(1.0 / self.cfg.holdout) if self.cfg.holdout > 0 else 0
        for i in np.flatnonzero(first):
            held = False
            if active and period:
                held = self.started % period == period - 1
                self.started += 1
            if self._hold_next:
                held, self._hold_next = True, False
            self.held[i] = held

    @property
    def explore(self) -> bool:
        return not self.held.all()

    def due(self, before: int, after: int) -> bool:
        every = self.cfg.calib_every
        return every > 0 and after // every > before // every

    def recalibrate(self, params, replay, rng: np.random.Generator, *, since: int = 0):
        """Refit on the replay's newest held-out transitions (added since add() number `since`:
        a new world's); returns {'threshold','n','alpha'}, or None when there are none yet."""
        holdout = replay.holdout_stream(self.cfg.calib_size, since=since)
        if len(holdout["obs"]) == 0 or replay.held >= len(replay):
            return None
        batch = replay.sample(self.cfg.fit_size, 1, rng)
        train = {"obs": batch["obs"][:, 0], "action": batch["action"][:, 0]}
        train["next_obs"] = batch["obs"][:, 1]
        self.calib, decisions = calibrate(
            self.agent,
            params,
            train,
            holdout,
            kind=self.cfg.score,
            window=self.cfg.window,
            alpha=self.cfg.alpha,
        )
        threshold = float(self.calib.threshold)
        return {"threshold": threshold, "n": len(decisions), "alpha": self.cfg.alpha}

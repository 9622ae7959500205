"""Calibrate the abstention threshold (host driver of jitted scoring).

`calibrate` fits the score normalisers on training transitions, scores held-out transitions the
model never trained on exactly as the gate would, and sets the split-conformal threshold, so
the in-distribution false-abstain rate is at most alpha. For the scores 'bias' and 'either' the
held-out episodes are split in two (`fit_split`, alternate episodes): one half fits the bias
test's mean and precision and the per-phase scales, the other alone sets the threshold, so the
guarantee still holds. With fewer than BIAS_MIN_PER_DIM fit transitions per residual dim the
bias test would be fit on noise (its in-sample quantile far under its out-of-sample one), so it
is left out (its scale inf) and `either` is the windowed max alone until there is enough data.
`score_transitions` is the jitted per-transition scorer the OOD benchmark also uses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from agents.abstain import decision_parts, decision_scores
from worldmodel.bias import fit_bias_test
from worldmodel.uncertainty import (
    BIAS_KINDS,
    Calibration,
    conformal_threshold,
    fit_scales,
    init_calibration,
    step_scores,
)

_CHUNK = 4096


@functools.partial(jax.jit, static_argnums=0)
def _score_chunk(model, params, calib, obs, action, next_obs):
    scores = step_scores(model, params, calib, obs, action, next_obs)
    r = scores.pop("residual")  # (T, D + L), obs part first
    return scores, {"interval_z": jnp.abs(r[..., : obs.shape[-1]]), "residual_z": r}


def score_transitions(agent, params, calib: Calibration, obs, action, next_obs) -> dict:
    """Per-transition scores of obs (T, D), action (T, A), next_obs (T, D).

    Returns numpy {'epistemic','surprise','max', and their parts} (T,), 'interval_z' (T, D)
    and 'residual_z' (T, D + L) (signed standardised residuals: step_scores' 'residual';
    interval_z is its observation part, unsigned), 'obs_target' (T, D) (what the observation
    heads predict, the same for every model) and 'obs_error' (T, D) (it minus the heads' mean
    prediction: raw, comparable across models on the same transitions). Evaluated in
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
            k: np.zeros(0)
            for k in ("epistemic", "surprise", "max", "interval_z", "residual_z", "obs_target",
                      "obs_error")
        }  # fmt: skip
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
    m = agent.model
    base = init_calibration(m.latent_dim, m.obs_dim, alpha=alpha)
    return base.replace(epi_scale=epi, res_scale=res, obs_epi_scale=obs_epi)


BIAS_MIN_PER_DIM = 10


def fit_split(first) -> tuple[np.ndarray, np.ndarray]:
    """(fit (T,) bool, first' (T,)): every other held-out episode (the 1st, 3rd, ...: both halves
    span the same training time), and the episode starts; one episode is split at T // 2, with
    a start added there."""
    first = np.asarray(first, bool).copy()
    episode = np.cumsum(first) - 1
    if len(first) and episode.max() >= 1:
        return episode % 2 == 0, first
    fit = np.arange(len(first)) < len(first) // 2
    if (~fit).any():
        first[np.argmax(~fit)] = True
    return fit, first


def holdout_decisions(
    agent, params, calib: Calibration, holdout: dict, *, kind: str, window: int, scores=None,
    keep: bool = False,
):  # fmt: skip
    """(decision scores, first) of the conformal part of `holdout` (the episodes `fit_split` does
    not fit on, for the bias kinds; else all of it) under `calib`; what the threshold and the change detector rank.
    `scores`: holdout's `score_transitions` under calib's normalisers, if already computed.
    `keep`: also return the (T,) mask of holdout's transitions that part is."""
    if scores is None:
        scores = score_transitions(
            agent, params, calib, holdout["obs"], holdout["action"], holdout["next_obs"]
        )
    first = np.asarray(holdout["first"], bool)
    if kind not in BIAS_KINDS:
        d = decision_scores(scores, first, kind=kind, window=window)
        mask = np.ones(len(first), bool)
    else:
        fit, first = fit_split(first)
        d = decision_scores(scores, first, kind=kind, window=window, calib=calib)
        d, first, mask = d[~fit], first[~fit], ~fit
    return (d, first, mask) if keep else (d, first)


def fit_bias(calib: Calibration, scores: dict, first, *, window: int) -> Calibration:
    """calib with the bias test (mean, precision) and the per-phase [max, bias] scales, both
    from the fit half of the held-out episodes (`fit_split`); scores: their
    `score_transitions`, first (T,) their episode starts. With under BIAS_MIN_PER_DIM fit
    transitions per residual dim the bias test is left out: its scale is inf."""
    fit, first = fit_split(first)
    residuals = scores["residual_z"]
    enough = fit.sum() >= BIAS_MIN_PER_DIM * residuals.shape[-1]
    if enough:
        test = fit_bias_test(residuals[fit], first[fit], window=window)
        calib = calib.replace(
            bias_mean=jnp.asarray(test.mean, jnp.float32),
            bias_prec=jnp.asarray(test.precision, jnp.float32),
        )
    parts = decision_parts(scores, first, window=window, calib=calib)
    scale = np.ones((2, 2))
    for phase in (0, 1):
        m = fit & (parts["late"] == bool(phase))
        for j, name in enumerate(("max_w", "bias")):
            if m.any():
                scale[phase, j] = max(float(np.quantile(parts[name][m], 1.0 - calib.alpha)), 1e-6)
    if not enough:
        scale[:, 1] = np.inf  # bias / inf = 0: the test takes no part
    return calib.replace(scale=jnp.asarray(scale, jnp.float32))


def calibrate(agent, params, train: dict, holdout: dict, *, kind: str, window: int, alpha: float):
    """Full calibration: normalisers from `train`, conformal threshold from `holdout`.

    train: obs (B, D), action (B, A), next_obs (B, D) — transitions the model trained on.
    holdout: obs, action, next_obs (T, ...), first (T,) — transitions it never trained on, in
    time order. Returns (Calibration, the decision scores the threshold was set on).
    """
    calib = fit_calibration_scales(agent, params, train, alpha=alpha)
    o, a, o2 = holdout["obs"], holdout["action"], holdout["next_obs"]
    scores = score_transitions(agent, params, calib, o, a, o2)
    if kind in BIAS_KINDS:
        calib = fit_bias(calib, scores, holdout["first"], window=window)
    decisions, _ = holdout_decisions(
        agent, params, calib, holdout, kind=kind, window=window, scores=scores
    )
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
        self.since = 0  # the last calibration's data: held out since add() number `since`
        self._hold_next = False
        self.hold_all = False  # True: every episode that starts is held out (a calibration phase)

    def min_holdout(self) -> int:
        """Held-out transitions a calibration should have: for the bias kinds enough that the
        bias test takes part (2 * BIAS_MIN_PER_DIM per residual dim, half of them fit), else 1."""
        m = self.agent.model
        if self.cfg.score in BIAS_KINDS:
            return 2 * BIAS_MIN_PER_DIM * (m.obs_dim + m.latent_dim)
        return 1

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
            if self._hold_next or self.hold_all:
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
        a new world's); returns {'threshold','n','alpha'} (and 'bias_test' for the bias kinds), or
        None when there are none yet."""
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
        self.since = since
        out = {
            "threshold": float(self.calib.threshold),
            "n": len(decisions),
            "alpha": self.cfg.alpha,
        }
        if self.cfg.score in BIAS_KINDS:  # False: too little held-out data for the bias test yet
            out["bias_test"] = bool(np.isfinite(np.asarray(self.calib.scale)[0, 1]))
        return out

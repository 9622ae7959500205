"""Change detection from the calibrated score: CUSUM on conformal p-values (host, numpy).

Each new score s_t gets a conformal p-value against the n in-distribution calibration scores,
  p_t = (1 + #{c_i >= s_t}) / (n + 1),
which is (super-)uniform while the world is unchanged. The CUSUM statistic accumulates the log
likelihood ratio of a small-p alternative f1(p) = kappa p^(kappa - 1) (kappa < 1) against the
uniform:
  S_t = max(0, S_{t-1} + log kappa + (kappa - 1) log p_t),
and alarms when S_t > h. h is set by simulation so that a stationary stream of i.i.d. uniform
p-values raises a false alarm within `horizon` steps with probability `false_alarm`. Real score
streams are autocorrelated (neighbouring transitions look alike), which makes false alarms more
frequent than on i.i.d. data: the benchmark reports the rate it actually sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from worldmodel.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ChangeConfig:
    """The `change` config slice."""

    false_alarm: float = 0.01  # P(any alarm within `horizon` steps of an unchanged world)
    horizon: int = 1000
    kappa: float = 0.5  # alternative p-value density kappa * p^(kappa - 1)

    def __post_init__(self):
        if not 0.0 < self.false_alarm < 1.0:
            raise ConfigError(f"change.false_alarm must be in (0, 1), got {self.false_alarm}")
        if not 0.0 < self.kappa < 1.0:
            raise ConfigError(f"change.kappa must be in (0, 1), got {self.kappa}")
        if self.horizon < 1:
            raise ConfigError(f"change.horizon must be >= 1, got {self.horizon}")


def conformal_pvalues(calib_scores, scores) -> np.ndarray:
    """p_t = (1 + #{calibration scores >= s_t}) / (n + 1) for every s_t (T,)."""
    c = np.sort(np.asarray(calib_scores, np.float64).ravel())
    s = np.asarray(scores, np.float64).ravel()
    above = len(c) - np.searchsorted(c, s, side="left")  # count of c >= s
    return (1.0 + above) / (len(c) + 1.0)


def cusum_increments(p, kappa: float) -> np.ndarray:
    return np.log(kappa) + (kappa - 1.0) * np.log(np.asarray(p, np.float64))


def cusum_path(p, kappa: float) -> np.ndarray:
    """S_t over a p-value stream (T,), starting from 0."""
    out = np.empty(len(p))
    s = 0.0
    for t, x in enumerate(cusum_increments(p, kappa)):
        s = max(0.0, s + x)
        out[t] = s
    return out


def cusum_threshold(cfg: ChangeConfig, *, sims: int = 4000, seed: int = 0) -> float:
    """h such that P(max_{t <= horizon} S_t > h) = false_alarm on i.i.d. uniform p-values."""
    rng = np.random.default_rng(seed)
    x = cusum_increments(rng.uniform(size=(sims, cfg.horizon)), cfg.kappa)
    s = np.zeros(sims)
    peak = np.zeros(sims)
    for t in range(cfg.horizon):
        s = np.maximum(0.0, s + x[:, t])
        peak = np.maximum(peak, s)
    return float(np.quantile(peak, 1.0 - cfg.false_alarm))


def cusum_threshold_from_episodes(
    cfg: ChangeConfig, episodes: list, *, sims: int = 1000, seed: int = 0
) -> float:
    """h from held-out score *streams*: whole calibration episodes (their in-episode correlation
    kept) are drawn with replacement and concatenated into streams of `horizon` steps; h is the
    (1 - false_alarm) quantile of the CUSUM maximum over them. Falls back to the i.i.d. h when
    there are no episodes."""
    episodes = [np.asarray(e, np.float64) for e in episodes if len(e)]
    if not episodes:
        return cusum_threshold(cfg, seed=seed)
    pooled = np.concatenate(episodes)
    incs = [cusum_increments(conformal_pvalues(pooled, e), cfg.kappa) for e in episodes]
    rng = np.random.default_rng(seed)
    peaks = np.empty(sims)
    for i in range(sims):
        parts, n = [], 0
        while n < cfg.horizon:
            parts.append(incs[rng.integers(len(incs))])
            n += len(parts[-1])
        x, s, peak = np.concatenate(parts)[: cfg.horizon], 0.0, 0.0
        for v in x:
            s = max(0.0, s + v)
            peak = max(peak, s)
        peaks[i] = peak
    return float(np.quantile(peaks, 1.0 - cfg.false_alarm))


class ChangeDetector:
    """Online CUSUM over conformal p-values. `update(score) -> bool` (True at an alarm);
    `alarm_step` is the first alarm's step; `reset(calib_scores, episodes)` starts over for a new
    world. With `episodes` (the calibration scores split by episode) the threshold is set on
    resampled calibration streams (`cusum_threshold_from_episodes`), which keeps the in-episode
    correlation that makes the i.i.d. threshold alarm far too often on real score streams."""

    def __init__(self, cfg: ChangeConfig, calib_scores, *, episodes=None, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self.reset(calib_scores, episodes)

    def reset(self, calib_scores, episodes=None) -> None:
        self.calib = np.sort(np.asarray(calib_scores, np.float64).ravel())
        if episodes is None:
            self.h = cusum_threshold(self.cfg, seed=self.seed)
        else:
            self.h = cusum_threshold_from_episodes(self.cfg, episodes, seed=self.seed)
        self.s, self.t, self.alarm_step = 0.0, 0, None

    def update(self, score: float) -> bool:
        p = conformal_pvalues(self.calib, [score])[0]
        self.s = max(0.0, self.s + float(cusum_increments([p], self.cfg.kappa)[0]))
        self.t += 1
        if self.s > self.h and self.alarm_step is None:
            self.alarm_step = self.t - 1
            return True
        return False


def first_alarm(calib_scores, scores, cfg: ChangeConfig, h: float) -> int | None:
    """Offline: index of the first alarm over a score stream, or None."""
    path = cusum_path(conformal_pvalues(calib_scores, scores), cfg.kappa)
    hits = np.flatnonzero(path > h)
    return int(hits[0]) if len(hits) else None

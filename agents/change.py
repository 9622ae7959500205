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
frequent than on i.i.d. data, hence `cusum_threshold_from_episodes` (h on resampled held-out
episodes). That h is only as good as the episodes it resamples, and real episodes are not
alike: on a 6k Hopper agent (`scripts.benchmark_change`) about one unchanged episode in eight has
a run of 20-36 consecutive high scores mid-episode, and the episode's first decisions (the reset
transient) and its last before a fall score highest; h set on 20 reference episodes gave 1.3
false alarms per 1000 decisions (configured: P(alarm within 1000) = 0.01). Two changes:
- A change of the world changes every episode after it, a rare episode is one episode: with
  `episode_cap` c < 1 one episode may raise the statistic by at most c h over its value when
  the episode began, S_t = min(max(0, S_{t-1} + x_t), S_start + c h), so an alarm (S_t > h)
  needs two episodes of evidence at c = 0.6 (h is set with the same cap).
- The first `edge` decisions of an episode, and the last `edge` before a terminal state, are
  not tested (in calibration alike): the detector runs `edge` decisions behind the stream.
Together: 0.11 false alarms per 1000 on that agent's 9260 fresh decisions (0.04 over 74k with
other 20-episode references), every mass x2 and gain x0.5 switch detected, after about one
episode (median 157-189 decisions). Below `min_episodes` reference episodes the detector is
not armed.
Confirmation (`confirm` episodes, 0 = off; with reference episodes only): a crossing of h is a
*suspicion*; the statistic starts again from 0 at the next episode, and only a second crossing
within the `confirm` episodes after the suspicion's confirms the change (reported at the first crossing: that is when it
was detected). Without one the suspicion is retracted. A real change keeps raising the
statistic; two unusual episodes in an unchanged world (what a false alarm on real streams is,
`continual_v5`) must be followed by two more. `false_alarm` is then the rate of suspicions, and
the rate of confirmed alarms is lower (measured in `scripts.benchmark_change`).
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
    episode_cap: float = 0.6  # share of h one episode may add (1: no cap); episodes-set h only
    min_episodes: int = 20  # reference episodes below which the detector is not armed
    edge: int = 10  # untested decisions at an episode's start and before a terminal state
    confirm: int = 3  # episodes after a crossing's in which a second one confirms it (0: none)

    def __post_init__(self):
        if not 0.0 < self.false_alarm < 1.0:
            raise ConfigError(f"change.false_alarm must be in (0, 1), got {self.false_alarm}")
        if not 0.0 < self.kappa < 1.0:
            raise ConfigError(f"change.kappa must be in (0, 1), got {self.kappa}")
        if self.horizon < 1:
            raise ConfigError(f"change.horizon must be >= 1, got {self.horizon}")
        if not 0.0 < self.episode_cap <= 1.0:
            raise ConfigError(f"change.episode_cap must be in (0, 1], got {self.episode_cap}")
        if self.edge < 0:
            raise ConfigError(f"change.edge must be >= 0, got {self.edge}")
        if self.min_episodes < 0:
            raise ConfigError(f"change.min_episodes must be >= 0, got {self.min_episodes}")
        if self.confirm < 0:
            raise ConfigError(
                f"change.confirm must be >= 0 (0: no confirmation), got {self.confirm}"
            )


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


def capped_cusum_peaks(x, start, cap: float) -> np.ndarray:
    """max_t S_t of each row of increments x (S, T), where an episode (start (S, T) True at its
    first step) may raise S by at most `cap` over its value when it began."""
    s, s0, peak = np.zeros(len(x)), np.zeros(len(x)), np.zeros(len(x))
    for t in range(x.shape[1]):
        s0 = np.where(start[:, t], s, s0)
        s = np.minimum(np.maximum(0.0, s + x[:, t]), s0 + cap)
        peak = np.maximum(peak, s)
    return peak


def cusum_threshold_from_episodes(
    cfg: ChangeConfig, episodes: list, *, sims: int = 1000, seed: int = 0, iters: int = 4
) -> float:
    """h from held-out score *streams*: whole calibration episodes (their in-episode correlation
    kept) are drawn with replacement and concatenated into streams of `horizon` steps; h is the
    (1 - false_alarm) quantile of the CUSUM maximum over them, with each episode's rise capped at
    `episode_cap` h (the cap depends on h: fixed-point iterations from the uncapped h). Falls
    back to the i.i.d. h when there are no episodes."""
    episodes = [np.asarray(e, np.float64) for e in episodes if len(e)]
    if not episodes:
        return cusum_threshold(cfg, seed=seed)
    pooled = np.concatenate(episodes)
    incs = [cusum_increments(conformal_pvalues(pooled, e), cfg.kappa) for e in episodes]
    rng = np.random.default_rng(seed)
    x = np.empty((sims, cfg.horizon))
    start = np.zeros((sims, cfg.horizon), bool)
    for i in range(sims):
        parts, n = [], 0
        while n < cfg.horizon:
            parts.append(incs[rng.integers(len(incs))])
            start[i, n] = n < cfg.horizon
            n += len(parts[-1])
        x[i] = np.concatenate(parts)[: cfg.horizon]
    h = float(np.quantile(capped_cusum_peaks(x, start, np.inf), 1.0 - cfg.false_alarm))
    for _ in range(iters if cfg.episode_cap < 1.0 else 0):
        peaks = capped_cusum_peaks(x, start, cfg.episode_cap * h)
        h = float(np.quantile(peaks, 1.0 - cfg.false_alarm))
    return h


def split_episodes(scores, first, terminated) -> tuple[list, list]:
    """Per-decision scores (T,) -> ([each episode's scores], [whether it ended terminated]);
    first (T,) marks episode starts, terminated (T,) the transitions that ended in one."""
    cuts = np.flatnonzero(np.asarray(first, bool))[1:]
    ends = [bool(t[-1]) for t in np.split(np.asarray(terminated, bool), cuts)]
    return np.split(np.asarray(scores), cuts), ends


def trim_edges(episodes: list, terminated, edge: int) -> list:
    """Each episode's scores without its first `edge` and, where terminated[i], its last `edge`:
    the decisions the detector tests."""
    out = []
    for e, term in zip(episodes, terminated, strict=True):
        e = np.asarray(e, np.float64)[edge:]
        out.append(e[: max(len(e) - edge, 0)] if term else e)
    return out


class ChangeDetector:
    """Online CUSUM over conformal p-values. `update(score) -> bool` (True at a confirmed alarm,
    `cfg.confirm`); `alarm_step` is the decision (counted from the last restart) at which it was
    first suspected, `suspected` the open suspicion's (None if none), `retracted` the
    unconfirmed ones'; `reset(calib_scores, episodes)` starts over for a new
    world. With `episodes` (the calibration scores split by episode) the threshold is set on
    resampled calibration streams (`cusum_threshold_from_episodes`), which keeps the in-episode
    correlation that makes the i.i.d. threshold alarm far too often on real score streams; with
    fewer than `cfg.min_episodes` of them the detector is not `armed` (never alarms) until a
    reset with enough. With `episodes`, `update(score, first=, last=, terminated=)` follows
    the episodes: each one's rise is capped at `cfg.episode_cap` h and its edges are not tested
    (`cfg.edge`). Without `episodes` (the i.i.d. threshold) it is always armed, uncapped, and
    tests every score at once."""

    def __init__(
        self, cfg: ChangeConfig, calib_scores, *, episodes=None, terminated=None, seed: int = 0
    ):
        self.cfg, self.seed = cfg, seed
        self.reset(calib_scores, episodes, terminated)

    def reset(self, calib_scores, episodes=None, terminated=None) -> None:
        """New reference: calib_scores, or with `episodes` (and whether each `terminated`) their
        tested part (`trim_edges`)."""
        self.edge = self.cfg.edge if episodes is not None else 0
        self.confirm = self.cfg.confirm if episodes is not None else 0
        if episodes is not None:
            term = [False] * len(episodes) if terminated is None else list(terminated)
            episodes = trim_edges(episodes, term, self.edge)
            calib_scores = np.concatenate(episodes) if episodes else np.zeros(0)
        self.calib = np.sort(np.asarray(calib_scores, np.float64).ravel())
        if episodes is None:
            self.h = cusum_threshold(self.cfg, seed=self.seed)
            self.armed = True
        else:
            self.h = cusum_threshold_from_episodes(self.cfg, episodes, seed=self.seed)
            self.armed = sum(1 for e in episodes if len(e)) >= self.cfg.min_episodes
        self.episodes = None if episodes is None else len(episodes)
        capped = episodes is not None and self.cfg.episode_cap < 1.0
        self.cap = self.cfg.episode_cap * self.h if capped else np.inf
        self.restart()

    def restart(self) -> None:
        """Zero the statistic (same reference and h), e.g. after an alarm was handled."""
        self.s, self.s_start, self.t, self.alarm_step = 0.0, 0.0, 0, None
        self.k, self.waiting, self.mute = 0, [], False
        self.suspected, self.since, self.retracted = None, 0, []

    def update(
        self, score: float, *, first: bool = False, last: bool = False, terminated: bool = False
    ) -> bool:
        """Add one decision score: `first` it begins an episode, `last` its episode ended with
        this decision's step, `terminated` in a terminal state. The first `edge` of an episode
        are not tested, the rest `edge` decisions late (dropped if the episode terminates before
        then, tested at once at a truncation). True if this call confirmed the first alarm."""
        if first:
            self.k, self.waiting, self.s_start, self.mute = 0, [], self.s, False
            if self.suspected is not None:
                self.since += 1
                if self.since > self.cfg.confirm:  # no second crossing in time
                    self.retracted.append(self.suspected)
                    self.suspected = None
        if self.k >= self.edge:
            self.waiting.append(float(score))
        self.k += 1
        self.t += 1
        cut = (
            len(self.waiting) if last and not terminated else max(len(self.waiting) - self.edge, 0)
        )
        ready, self.waiting = self.waiting[:cut], ([] if last else self.waiting[cut:])
        if not ready or self.mute:
            return False
        for x in cusum_increments(conformal_pvalues(self.calib, ready), self.cfg.kappa):
            self.s = min(max(0.0, self.s + float(x)), self.s_start + self.cap)
        if not (self.armed and self.s > self.h and self.alarm_step is None):
            return False
        if self.confirm and self.suspected is None:  # a suspicion: evidence from the next episode
            self.suspected, self.since, self.s, self.s_start = self.t - 1, 0, 0.0, 0.0
            self.mute = True
            return False
        self.alarm_step = self.t - 1 if self.suspected is None else self.suspected
        self.suspected = None
        return True


def first_alarm(calib_scores, scores, cfg: ChangeConfig, h: float) -> int | None:
    """Offline: index of the first alarm over a score stream, or None."""
    path = cusum_path(conformal_pvalues(calib_scores, scores), cfg.kappa)
    hits = np.flatnonzero(path > h)
    return int(hits[0]) if len(hits) else None

"""Windowed bias test on the model's signed residuals (host, numpy): sees a world whose dynamics
drift from the model's in one direction, which squared-error scores average away.

A heavier body or a weaker motor makes every prediction overshoot a little, by less than the
model's per-step noise, so a per-step score (squared residual, ensemble disagreement) stays near
its in-distribution range. The mean of the signed residuals over a window does not: noise
cancels in it and a consistent bias adds up. Per transition t, with r_t (M,) the standardised
residuals of worldmodel.uncertainty.step_scores' 'residual' (observation and latent parts):

    w_t   = sum_{s in window(t)} r_s / sqrt(n_t)            (trailing `window` steps, same episode)
    T2_t  = (w_t - mu)^T P (w_t - mu) / M                   (~1 in distribution)

mu (M,) and P (M, M) = (Cov + ridge·mean(diag Cov)·I)^-1 are fit on held-out in-distribution
transitions (Hotelling's statistic: the covariance takes the residuals' correlation across dims
and, since w_t is scaled by sqrt(n_t), within the window). Cov is the Ledoit-Wolf shrinkage
estimate (toward mean(diag)·I, intensity from the data), so the test is defined even with fewer
windows than dims, as early in training, and is ~ the sample covariance with plenty of data. Threshold it split-conformally like
any score (worldmodel.uncertainty.conformal_threshold) on a second held-out split.
Shapes: residuals (T, M), first (T,) bool (episode starts); scores (T,).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from worldmodel.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BiasTest:
    """mean (M,), precision (M, M), window: what `bias_scores` needs; from `fit_bias_test`."""

    mean: np.ndarray
    precision: np.ndarray
    window: int


def window_sums(residuals, first, window: int) -> np.ndarray:
    """w_t (T, M): the sum of r over the trailing `window` steps of t's episode over sqrt(count)."""
    if window < 1:
        raise ConfigError(f"the bias test's window must be >= 1, got {window}")
    r = np.asarray(residuals, np.float64)
    T = len(r)
    t = np.arange(T)
    start = np.maximum.accumulate(np.where(np.asarray(first, bool), t, 0))
    lo = np.maximum(start, t - window + 1)
    c = np.concatenate([np.zeros((1,) + r.shape[1:]), np.cumsum(r, axis=0)])
    n = (t + 1 - lo).astype(np.float64)
    return (c[t + 1] - c[lo]) / np.sqrt(n)[:, None]


def fit_bias_test(residuals, first, *, window: int = 10, ridge: float = 1e-3) -> BiasTest:
    """Fit mu and P on held-out in-distribution residuals (T, M), T >= 2."""
    w = window_sums(residuals, first, window)
    if len(w) < 2:
        raise ConfigError(
            f"the bias test needs at least 2 held-out transitions, got {len(w)}: "
            "collect more calibration episodes"
        )
    cov = ledoit_wolf(w)
    cov = cov + ridge * np.mean(np.diag(cov)) * np.eye(len(cov))
    return BiasTest(w.mean(axis=0), np.linalg.inv(cov), window)


def ledoit_wolf(x) -> np.ndarray:
    """Shrunk covariance (M, M) of samples x (T, M): (1 - k)·S + k·mu·I with S the sample
    covariance, mu = tr(S) / M and k = min(1, b² / d²) (Ledoit & Wolf 2004: d² = |S - mu I|²,
    b² = sum_t |x_t x_t^T - S|² / T², Frobenius norms)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    T = len(x)
    S = x.T @ x / T
    mu = np.trace(S) / len(S)
    d2 = np.sum((S - mu * np.eye(len(S))) ** 2)
    b2 = (np.sum(np.sum(x**2, axis=1) ** 2) - T * np.sum(S**2)) / T**2
    k = 1.0 if d2 <= 0 else min(1.0, max(b2, 0.0) / d2)
    return (1.0 - k) * S + k * mu * np.eye(len(S))


def bias_scores(test: BiasTest, residuals, first) -> np.ndarray:
    """T2_t (T,) of residuals (T, M) under `test`."""
    d = window_sums(residuals, first, test.window) - test.mean
    return np.einsum("td,de,te->t", d, test.precision, d) / d.shape[1]

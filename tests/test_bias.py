"""worldmodel.bias: windowed sums by hand, ~1 and alpha in distribution, a small consistent drift
seen where a per-step squared score misses it, one-line errors."""

import numpy as np
import pytest

from agents.metrics import auroc
from worldmodel.bias import bias_scores, fit_bias_test, window_sums
from worldmodel.errors import ConfigError
from worldmodel.uncertainty import conformal_threshold


def _stream(rng, episodes, length, M, drift=0.0):
    """Correlated N(drift, C) residuals (episodes * length, M) and episode starts."""
    mix = np.eye(M) + 0.5 * np.tri(M, M, -1) / M
    r = rng.normal(size=(episodes * length, M)) @ mix.T + drift
    first = np.zeros(episodes * length, bool)
    first[::length] = True
    return r, first


def test_window_sums_match_a_python_loop_and_stop_at_episode_starts():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(9, 2))
    first = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    got = window_sums(r, first, window=3)
    for t in range(9):
        start = max(s for s in range(t + 1) if first[s])
        lo = max(start, t - 2)
        np.testing.assert_allclose(got[t], r[lo : t + 1].sum(0) / np.sqrt(t + 1 - lo))
    np.testing.assert_allclose(got[4], r[4])  # a new episode does not see the last one


def test_in_distribution_scores_are_about_one_and_false_alarms_alpha():
    rng = np.random.default_rng(1)
    M, alpha = 6, 0.05
    test = fit_bias_test(*_stream(rng, 40, 200, M), window=10)
    cal = bias_scores(test, *_stream(rng, 40, 200, M))
    fresh = bias_scores(test, *_stream(rng, 40, 200, M))
    assert fresh.mean() == pytest.approx(1.0, abs=0.1)
    # windows overlap, so false alarms come in runs: the rate holds on average, loosely per draw
    assert np.mean(fresh > conformal_threshold(cal, alpha)) == pytest.approx(alpha, abs=0.02)


def test_a_small_consistent_drift_is_seen_that_a_squared_score_misses():
    """Drift 0.5 sd per dim per step: lost in one step's squared norm, plain over 10 steps."""
    rng = np.random.default_rng(2)
    M = 6
    test = fit_bias_test(*_stream(rng, 40, 200, M), window=10)
    r_in, f_in = _stream(rng, 20, 200, M)
    r_out, f_out = _stream(rng, 20, 200, M, drift=0.5)
    squared = auroc((r_in**2).mean(1), (r_out**2).mean(1))
    windowed = auroc(bias_scores(test, r_in, f_in), bias_scores(test, r_out, f_out))
    assert squared < 0.65 < 0.9 < windowed


def test_bad_window_and_too_little_data_are_one_line_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(ConfigError, match="window must be >= 1"):
        window_sums(np.zeros((4, 2)), np.ones(4, bool), window=0)
    with pytest.raises(ConfigError, match="at least 2 held-out transitions"):
        fit_bias_test(*_stream(rng, 1, 1, 8))


def test_ledoit_wolf_shrinks_with_few_samples_and_not_with_many():
    """Fewer samples than dims: still invertible, pulled toward mu·I. Many: ~ the sample
    covariance. By hand, x = (1, 0), (-1, 0): S = [[1, 0], [0, 0]], mu = 1/2, d² = 1/2,
    b² = (|x1|⁴ + |x2|⁴ - 2|S|²) / 2² = (1 + 1 - 2) / 4 = 0, so k = 0 and the result is S."""
    from worldmodel.bias import ledoit_wolf

    x = np.array([[1.0, 0.0], [-1.0, 0.0]])  # centred; every sample on the same axis
    np.testing.assert_allclose(ledoit_wolf(x), [[1.0, 0.0], [0.0, 0.0]])  # b² = 0: no shrinkage
    rng = np.random.default_rng(5)
    few = rng.normal(size=(5, 20))
    assert np.linalg.matrix_rank(np.cov(few, rowvar=False)) < 20  # singular without shrinkage
    assert np.all(np.linalg.eigvalsh(ledoit_wolf(few)) > 0)
    many = rng.normal(size=(20000, 4)) @ np.diag([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(ledoit_wolf(many), np.cov(many, rowvar=False, bias=True), atol=0.05)

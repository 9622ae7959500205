"""Change detection: false-alarm rate on stationary streams matches the configuration; a mean
shift is detected quickly; conformal p-values are uniform by hand."""

import numpy as np
import pytest

from agents.change import (
    ChangeConfig,
    ChangeDetector,
    conformal_pvalues,
    cusum_path,
    cusum_threshold,
    first_alarm,
)
from worldmodel.errors import ConfigError


def test_conformal_pvalues_by_hand():
    calib = [1.0, 2.0, 3.0, 4.0]  # n = 4
    np.testing.assert_allclose(conformal_pvalues(calib, [0.5, 2.0, 2.5, 9.0]), [1, 0.8, 0.6, 0.2])


def test_cusum_path_by_hand():
    k = 0.5  # increment log(0.5) - 0.5 log p
    p = np.array([1.0, 0.01, 0.01, 1.0])
    inc = np.log(0.5) - 0.5 * np.log(p)
    want, s = [], 0.0
    for x in inc:
        s = max(0.0, s + x)
        want.append(s)
    np.testing.assert_allclose(cusum_path(p, k), want)


@pytest.mark.parametrize("false_alarm", [0.05, 0.2])
def test_false_alarm_rate_on_a_stationary_stream_matches_configuration(false_alarm):
    cfg = ChangeConfig(false_alarm=false_alarm, horizon=300)
    h = cusum_threshold(cfg, seed=1)
    rng = np.random.default_rng(7)  # fresh streams, not the ones h was set on
    calib = rng.normal(size=2000)
    alarms = [first_alarm(calib, rng.normal(size=300), cfg, h) is not None for _ in range(1500)]
    # finite calibration sets make p-values discrete; tolerance ~ 3 binomial std + MC error of h
    assert abs(np.mean(alarms) - false_alarm) < 3 * np.sqrt(false_alarm / 1500) + 0.015


def test_mean_shift_is_detected_soon_after_the_change():
    cfg = ChangeConfig(false_alarm=0.01, horizon=1000)
    rng = np.random.default_rng(3)
    calib = rng.normal(size=2000)
    det = ChangeDetector(cfg, calib, seed=0)
    delays = []
    for _ in range(50):
        det.reset(calib)
        stream = np.concatenate([rng.normal(size=500), rng.normal(1.5, 1.0, size=500)])
        for s in stream:
            det.update(s)
        assert det.alarm_step is not None
        delays.append(det.alarm_step - 500)
    delays = np.array(delays)
    assert np.mean(delays < 0) < 0.1  # few alarms before the change
    assert np.median(delays[delays >= 0]) < 20


def test_change_config_errors():
    with pytest.raises(ConfigError, match="change.false_alarm"):
        ChangeConfig(false_alarm=0)
    with pytest.raises(ConfigError, match="change.kappa"):
        ChangeConfig(kappa=1.5)


def test_threshold_from_correlated_episodes_keeps_the_configured_rate():
    # AR(1) scores (rho 0.95): the i.i.d. threshold alarms far too often; the threshold set on
    # resampled calibration episodes keeps fresh episodes at or below the configured rate (it
    # is conservative: in-sample p-values and 40 episodes to resample; measured 0.03 for 0.1).
    from agents.change import cusum_threshold_from_episodes

    rng = np.random.default_rng(0)

    def episode(n=250):
        x = np.empty(n)
        x[0] = rng.normal()
        for t in range(1, n):
            x[t] = 0.95 * x[t - 1] + np.sqrt(1 - 0.95**2) * rng.normal()
        return x

    cfg = ChangeConfig(false_alarm=0.1, horizon=250)
    calib_eps = [episode() for _ in range(40)]
    calib = np.concatenate(calib_eps)
    h_iid = cusum_threshold(cfg, seed=0)
    h_ep = cusum_threshold_from_episodes(cfg, calib_eps, sims=400, seed=0)
    fresh = [episode() for _ in range(300)]
    rate_iid = np.mean([first_alarm(calib, e, cfg, h_iid) is not None for e in fresh])
    rate_ep = np.mean([first_alarm(calib, e, cfg, h_ep) is not None for e in fresh])
    assert rate_iid > 0.4  # the i.i.d. assumption fails on correlated streams
    assert rate_ep <= 0.1 + 0.05 and rate_ep < rate_iid / 4


def test_calibrator_holds_out_every_period_and_the_episode_after_hold_next():
    """Held-out episodes are counted (every round(1/holdout)-th); `hold_next` (called at a change
    alarm) also holds out the next episode to start, without shifting the count."""
    from types import SimpleNamespace

    from agents.calibration import Calibrator

    cfg = SimpleNamespace(holdout=0.1)
    cal = Calibrator(SimpleNamespace(init_calibration=lambda: None), cfg, seed=0, num_envs=1)
    held = []
    for ep in range(20):
        if ep == 3:
            cal.hold_next()
        cal.start_episodes(np.ones(1, bool), active=True)
        held.append(bool(cal.held[0]))
        cal.start_episodes(np.zeros(1, bool), active=True)  # mid-episode steps change nothing
        assert cal.held[0] == held[-1]
    assert [i for i, h in enumerate(held) if h] == [3, 9, 19]
    # not active (the seed phase): nothing held out, and the count does not advance
    cal.start_episodes(np.ones(1, bool), active=False)
    assert not cal.held[0] and cal.started == 20

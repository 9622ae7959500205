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

    cfg = ChangeConfig(false_alarm=0.1, horizon=250, episode_cap=1.0)
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


def test_detector_is_not_armed_with_too_few_reference_episodes():
    """A threshold set on a handful of episodes is not trusted: below `min_episodes` reference
    episodes the detector never alarms, even on a stream far outside its reference."""
    rng = np.random.default_rng(5)
    episodes = [rng.normal(size=50) for _ in range(6)]
    calib = np.concatenate(episodes)
    far = rng.normal(5.0, 1.0, size=200)
    few = ChangeDetector(ChangeConfig(min_episodes=10, confirm=0), calib, episodes=episodes, seed=0)
    assert not few.armed and not any(few.update(s, first=t % 50 == 0) for t, s in enumerate(far))
    enough = ChangeDetector(
        ChangeConfig(min_episodes=6, confirm=0), calib, episodes=episodes, seed=0
    )
    assert enough.armed and enough.h == few.h  # the same threshold, now allowed to alarm
    assert any(enough.update(s, first=t % 50 == 0) for t, s in enumerate(far))
    iid = ChangeDetector(ChangeConfig(min_episodes=10), calib, seed=0)
    assert iid.armed  # the i.i.d. threshold needs no episodes
    with pytest.raises(ConfigError, match="change.min_episodes"):
        ChangeConfig(min_episodes=-1)


def test_episode_cap_needs_two_episodes_of_evidence():
    """One rare in-distribution episode (a long run of high scores) alarms the plain CUSUM but
    not the capped one; a change that lasts two episodes alarms both, the capped one in the
    second episode. The threshold itself is set with the cap (capped_cusum_peaks by hand)."""
    from agents.change import capped_cusum_peaks

    x = np.array([[1.0, 1.0, 1.0, 1.0, -5.0, 2.0]])
    start = np.array([[True, False, False, True, False, True]])
    # S: 1, 1.5 (capped at 0 + 1.5), 1.5, 2.5 (a new episode: 1.5 + 1), 0, 1.5 (0 + 1.5);
    # uncapped 1, 2, 3, 4, 0, 2
    np.testing.assert_allclose(capped_cusum_peaks(x, start, 1.5), [2.5])
    np.testing.assert_allclose(capped_cusum_peaks(x, start, np.inf), [4.0])

    rng = np.random.default_rng(2)
    episodes = [rng.normal(size=100) for _ in range(30)]
    calib = np.concatenate(episodes)
    plain = ChangeDetector(
        ChangeConfig(episode_cap=1.0, confirm=0), calib, episodes=episodes, seed=0
    )
    capped = ChangeDetector(
        ChangeConfig(episode_cap=0.6, confirm=0), calib, episodes=episodes, seed=0
    )
    assert capped.armed and np.isfinite(capped.cap) and capped.cap == 0.6 * capped.h

    def feed(det, stream):
        det.restart()
        for t, s in enumerate(stream):
            if det.update(s, first=t % 100 == 0):
                return t
        return None

    rare = np.concatenate([rng.normal(size=100), rng.normal(size=100), rng.normal(size=100)])
    rare[130:170] = 6.0  # one episode with a 40-step run far above every reference score
    assert feed(plain, rare) is not None
    assert feed(capped, rare) is None
    shifted = np.concatenate([rng.normal(size=100), rng.normal(3.0, 1.0, size=200)])
    at_plain, at_capped = feed(plain, shifted), feed(capped, shifted)
    assert at_plain is not None and 100 <= at_plain < 200
    # at least as late (it may use the evidence of the episode before the change too), and early
    # in the second changed episode at the latest
    assert at_capped is not None and at_plain <= at_capped < 230


def test_edges_of_an_episode_are_not_tested_and_a_truncation_is():
    """With change.edge, the first `edge` decisions of an episode and the last `edge` before a
    terminal state are never tested (a fall's burst cannot alarm), while the same burst before
    a time-limit truncation is tested at that episode's last step; trim_edges by hand."""
    from agents.change import trim_edges

    eps = [np.arange(30.0), np.arange(30.0)]
    out = trim_edges(eps, [True, False], 10)
    assert out[0].tolist() == list(range(10, 20)) and out[1].tolist() == list(range(10, 30))

    rng = np.random.default_rng(0)
    ref = [rng.normal(size=100) for _ in range(30)]
    cfg = ChangeConfig(edge=10, episode_cap=1.0, min_episodes=0, confirm=0)

    def feed(det, bursts_at, terminated):
        det.restart()
        t = 0
        for _ in range(10):
            e = rng.normal(size=100)
            e[bursts_at] = 50.0
            for i, s in enumerate(e):
                last = i == 99
                if det.update(s, first=i == 0, last=last, terminated=terminated and last):
                    return t
                t += 1
        return None

    det = ChangeDetector(cfg, np.concatenate(ref), episodes=ref, terminated=[True] * 30, seed=0)
    assert feed(det, slice(92, 100), terminated=True) is None  # falls: untested
    assert feed(det, slice(0, 8), terminated=True) is None  # the reset transient: untested
    at = feed(det, slice(92, 100), terminated=False)  # the same burst, then a truncation
    assert at is not None and at % 100 == 99
    at = feed(det, slice(40, 48), terminated=True)  # mid-episode: tested, `edge` steps late
    assert at is not None and 50 <= at % 100 < 58


def test_confirmation_retracts_one_rare_episode_and_confirms_a_lasting_change():
    """change.confirm: a crossing is a suspicion; the statistic starts again at the next episode
    and a second crossing within `confirm` episodes confirms it, reported at the first crossing.
    One rare episode (what alarms the plain CUSUM) is retracted; a lasting shift is confirmed
    later than the plain detector alarms, with the same detection step."""
    rng = np.random.default_rng(4)
    ref = [rng.normal(size=100) for _ in range(30)]
    calib = np.concatenate(ref)

    def det(confirm):
        cfg = ChangeConfig(episode_cap=1.0, edge=0, confirm=confirm)
        return ChangeDetector(cfg, calib, episodes=ref, seed=0)

    def feed(d, stream):
        for t, s in enumerate(stream):
            if d.update(s, first=t % 100 == 0):
                return t
        return None

    rare = rng.normal(size=800)
    rare[130:170] = 6.0  # one unusual episode, then six ordinary ones
    plain, confirmed = det(0), det(3)
    at = feed(plain, rare)
    assert at is not None and 130 <= at < 170
    assert feed(confirmed, rare) is None
    assert confirmed.retracted == [at] and confirmed.suspected is None  # same crossing, withdrawn

    shifted = np.concatenate([rng.normal(size=200), rng.normal(3.0, 1.0, size=400)])
    plain, confirmed = det(0), det(3)
    at_plain, at_confirmed = feed(plain, shifted), feed(confirmed, shifted)
    assert at_plain is not None and 200 <= at_plain < 300
    # confirmed in a later episode (the rest of the suspicion's episode is not counted)
    assert at_confirmed is not None and at_confirmed >= 300
    assert confirmed.alarm_step == plain.alarm_step == at_plain and confirmed.retracted == []

    late = np.concatenate([rng.normal(size=200), np.full(100, 6.0), rng.normal(size=400),
                           rng.normal(3.0, 1.0, size=100)])  # fmt: skip
    one = det(1)  # the second crossing must come within one episode after the suspicion's
    assert feed(one, late) is None  # the stream ends before the last shift is confirmed
    assert len(one.retracted) == 1 and 200 <= one.retracted[0] < 300
    assert one.suspected is not None and one.suspected >= 700  # ... but it is suspected
    with pytest.raises(ConfigError, match="change.confirm"):
        ChangeConfig(confirm=-1)

"""The bias kinds of the gate (`abstain.score: bias | either`): the online gate equals the offline
decision scores step by step, the fit split keeps the conformal half apart, the per-phase scales
hold the false-alarm rate at alpha in the reset transient and after it, and the calibration with
its bias test survives the JSON round trip."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from agents.abstain import AbstainConfig, decision_scores, gate, init_prev
from agents.calibration import fit_bias, fit_split, score_transitions
from worldmodel.uncertainty import Calibration, conformal_threshold, init_calibration

L, D, A = 16, 3, 1  # the debug model's latent, the point mass's obs and action


def _episodes(rng, lengths):
    """A stored stream: obs (T, D), action (T, A), next_obs (T, D), first (T,)."""
    T = sum(lengths)
    obs = rng.normal(size=(T, D)).astype(np.float32)
    nxt = (obs + 0.1 * rng.normal(size=(T, D))).astype(np.float32)
    first = np.zeros(T, bool)
    first[np.cumsum([0, *lengths[:-1]])] = True
    nxt[:-1][~first[1:]] = obs[1:][~first[1:]]  # consecutive steps chain within an episode
    act = rng.uniform(-1, 1, (T, A)).astype(np.float32)
    return {"obs": obs, "action": act, "next_obs": nxt, "first": first}


def _calib(rng, alpha=0.05):
    M = D + L
    q = rng.normal(size=(M, M))
    return init_calibration(L, D, alpha=alpha).replace(
        bias_mean=jnp.asarray(0.1 * rng.normal(size=M), jnp.float32),
        bias_prec=jnp.asarray(q @ q.T / M + np.eye(M), jnp.float32),
        scale=jnp.asarray([[1.5, 2.0], [0.7, 3.0]], jnp.float32),
        threshold=jnp.asarray(1.0, jnp.float32),
    )


@pytest.mark.parametrize("kind", ["bias", "either", "max"])
def test_online_gate_equals_offline_decision_scores(tiny, kind):
    """Step the jitted-model gate through two episodes (window 4, one shorter than it) and compare
    every decision's score with decision_scores rebuilt from the stored transitions."""
    rng = np.random.default_rng(0)
    model, params = tiny.model(), tiny.perturb(tiny.init_params(0), 1)
    data = _episodes(rng, [9, 3, 7])
    calib, W = _calib(rng), 4
    cfg = AbstainConfig(enabled=True, score=kind, window=W)
    prev = init_prev(1, D, A, W, D + L if kind != "max" else 0)
    online = []
    for t in range(len(data["obs"])):
        _, score, _, prev = gate(
            model, params, calib, cfg, prev, data["obs"][t : t + 1], data["action"][t : t + 1],
            data["first"][t : t + 1],
        )  # fmt: skip
        online.append(float(score[0]))
    agent = types.SimpleNamespace(model=model)
    scores = score_transitions(agent, params, calib, data["obs"], data["action"], data["next_obs"])
    offline = decision_scores(scores, data["first"], kind=kind, window=W, calib=calib)
    np.testing.assert_allclose(online, offline, rtol=2e-4, atol=2e-5)
    if kind == "bias":  # no transition of the episode yet: nothing to test
        assert np.all(np.asarray(online)[data["first"]] == 0.0)
    assert len(set(np.round(online, 4))) > len(online) // 2  # not a constant


def test_fit_split_alternates_episodes_and_splits_a_single_one():
    first = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0], bool)  # 4 episodes
    fit, f2 = fit_split(first)
    np.testing.assert_array_equal(fit, [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0])  # episodes 0 and 2
    np.testing.assert_array_equal(f2, first)
    one = np.zeros(10, bool)
    one[0] = True
    fit, f2 = fit_split(one)
    np.testing.assert_array_equal(fit, np.arange(10) < 5)
    assert f2[5] and f2.sum() == 2  # the second half begins an episode of its own


def _transient_stream(rng, episodes, length, W, M=4):
    """Synthetic scores: residuals N(0, I) except the first W steps of every episode, which
    are 3x wider (a reset transient); epistemic/surprise scores likewise."""
    T = episodes * length
    k = np.tile(np.arange(length), episodes)
    sd = np.where(k < W, 3.0, 1.0)
    first = k == 0
    scores = {
        "residual_z": rng.normal(size=(T, M)) * sd[:, None],
        "epistemic": rng.chisquare(3, T) / 3 * sd,
        "surprise": rng.chisquare(3, T) / 3 * sd,
    }
    return scores, first, k


def test_per_phase_scales_keep_the_false_alarm_rate_in_the_transient_and_after():
    """Calibrated 'either' on one stream, checked on a fresh one from the same law: the
    false-alarm rate is about alpha overall, in the first W decisions and after them. Without the
    per-phase scales (all ones) the transient takes the alarms."""
    rng = np.random.default_rng(3)
    W, alpha, M = 10, 0.05, 4
    calib = init_calibration(M - 1, 1, alpha=alpha)  # M = D + L = 4 residual dims
    scores, first, _ = _transient_stream(rng, 200, 60, W, M)
    calib = fit_bias(calib, scores, first, window=W)
    s = np.asarray(calib.scale)
    assert s[0, 1] > 2 * s[1, 1] and s[0, 0] > 1.5 * s[1, 0]  # the transient's quantiles are wider
    fit, f2 = fit_split(first)
    thr = conformal_threshold(
        decision_scores(scores, f2, kind="either", window=W, calib=calib)[~fit], alpha
    )
    fresh, ff, k = _transient_stream(rng, 200, 60, W, M)
    alarms = decision_scores(fresh, ff, kind="either", window=W, calib=calib) > thr
    assert alarms.mean() == pytest.approx(alpha, abs=0.015)
    assert alarms[k < W].mean() == pytest.approx(alpha, abs=0.03)
    assert alarms[k >= W].mean() == pytest.approx(alpha, abs=0.02)
    flat = calib.replace(scale=jnp.ones((2, 2)))
    thr_flat = conformal_threshold(
        decision_scores(scores, f2, kind="either", window=W, calib=flat)[~fit], alpha
    )
    alarms_flat = decision_scores(fresh, ff, kind="either", window=W, calib=flat) > thr_flat
    assert alarms_flat[k < W].mean() > 3 * alpha  # what the scales are for


def test_too_little_data_leaves_the_bias_test_out():
    """Under BIAS_MIN_PER_DIM fit transitions per dim the bias scale is inf, so 'either' is the
    scaled windowed max alone; with enough it is finite."""
    from agents.calibration import BIAS_MIN_PER_DIM

    rng = np.random.default_rng(5)
    W, M = 10, 4
    calib = init_calibration(M - 1, 1)
    few, first, _ = _transient_stream(rng, 2, 30, W, M)  # one fit episode: 30 transitions
    assert BIAS_MIN_PER_DIM * M > 30
    off = fit_bias(calib, few, first, window=W)
    assert np.all(np.isinf(np.asarray(off.scale)[:, 1]))
    d = decision_scores(few, first, kind="either", window=W, calib=off)
    want = (
        decision_scores(few, first, kind="max", window=W)
        / np.asarray(off.scale)[(np.tile(np.arange(30), 2) >= W).astype(int), 0]
    )
    np.testing.assert_allclose(d, want)
    many, first, _ = _transient_stream(rng, 4, 30, W, M)  # 60 fit transitions >= 40
    assert np.all(np.isfinite(np.asarray(fit_bias(calib, many, first, window=W).scale)))


def test_calibration_json_round_trip_keeps_the_bias_test_and_reads_old_files():
    rng = np.random.default_rng(4)
    calib = _calib(rng)
    back = Calibration.from_json(calib.to_json())
    for f in ("bias_mean", "bias_prec", "scale", "threshold", "epi_scale"):
        np.testing.assert_allclose(getattr(back, f), getattr(calib, f), rtol=1e-6)
    old = {k: v for k, v in calib.to_json().items() if k not in ("bias_mean", "bias_prec", "scale")}
    legacy = Calibration.from_json(old)  # saved before the bias test existed
    np.testing.assert_array_equal(legacy.bias_prec, np.eye(D + L))
    np.testing.assert_array_equal(legacy.scale, np.ones((2, 2)))

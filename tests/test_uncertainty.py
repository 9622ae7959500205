"""Abstention: conformal thresholds on known distributions, score math by hand, the gate in `act`,
held-out replay episodes, and a toy model that abstains far from its data and not near it."""

import math
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.abstain import AbstainConfig, decision_scores
from agents.calibration import calibrate, score_transitions
from agents.library import Library, World, probe_verdict, recognise, stream_report
from agents.replay import Replay
from envs import Step
from worldmodel.errors import ConfigError
from worldmodel.uncertainty import (
    Abstained,
    conformal_threshold,
    init_calibration,
    predict,
    step_scores,
    window_mean,
)


def test_conformal_threshold_gives_stated_false_abstain_rate_on_a_known_distribution():
    # Scores ~ Exp(1): P(score > t) = exp(-t) exactly. Split conformal with n calibration
    # scores has E[P(fresh > threshold)] = 1 - k/(n+1), k = ceil((n+1)(1-alpha)), <= alpha.
    alpha, n, reps = 0.05, 199, 4000
    rng = np.random.default_rng(0)
    miss = np.array(
        [math.exp(-conformal_threshold(rng.exponential(size=n), alpha)) for _ in range(reps)]
    )
    k = math.ceil((n + 1) * (1 - alpha))
    expected = 1 - k / (n + 1)  # 0.05 exactly for n = 199
    assert expected <= alpha + 1e-12
    # std of the mean over reps: sqrt(Var[Beta]) / sqrt(reps) ~ 0.015 / 63 ~ 2.4e-4
    assert abs(miss.mean() - expected) < 1e-3
    # and on fresh draws, not the formula: one calibration, a million test scores
    thr = conformal_threshold(rng.exponential(size=20000), alpha)
    assert abs((rng.exponential(size=1_000_000) > thr).mean() - alpha) < 0.005


def test_conformal_threshold_rank_and_degenerate_cases():
    scores = np.arange(1, 20, dtype=float)  # n = 19: k = ceil(20 * 0.95) = 19 -> the max
    assert conformal_threshold(scores, 0.05) == 19.0
    assert conformal_threshold(scores, 0.5) == 10.0  # k = ceil(20 * 0.5) = 10
    assert conformal_threshold(scores[:5], 0.05) == math.inf  # too few to promise 5%
    with pytest.raises(ConfigError, match="alpha"):
        conformal_threshold(scores, 1.5)


def test_window_mean_and_decision_alignment_by_hand():
    s = np.array([1.0, 3.0, 5.0, 7.0, 2.0])
    first = np.array([True, False, False, True, False])
    np.testing.assert_allclose(window_mean(s, first, 2), [1, 2, 4, 7, 4.5])
    e = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    sur = np.array([0.5, 4.0, 0.2, 9.0, 0.1])  # surprise of transition t (seen at t + 1)
    d = decision_scores({"epistemic": e, "surprise": sur}, first, kind="max", window=1)
    np.testing.assert_allclose(d, [1.0, 1.0, 4.0, 1.0, 9.0])  # s_{t-1}, 0 at episode starts
    d = decision_scores({"epistemic": e, "surprise": sur}, first, kind="surprise", window=1)
    np.testing.assert_allclose(d, [0.0, 0.5, 4.0, 0.0, 9.0])


def test_step_scores_match_hand_formula(tiny):
    model, params = tiny.model(), tiny.perturb(tiny.init_params(0), 1)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 3)).astype(np.float32)
    nxt = rng.normal(size=(4, 3)).astype(np.float32)
    a = rng.uniform(-1, 1, (4, 1)).astype(np.float32)
    epi = rng.uniform(0.5, 2, 16).astype(np.float32)
    res = rng.uniform(0.5, 2, 16).astype(np.float32)
    oepi = rng.uniform(0.5, 2, 3).astype(np.float32)
    calib = init_calibration(16, 3).replace(epi_scale=epi, res_scale=res, obs_epi_scale=oepi)
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    z, zn = f64(model.encode(params, obs)), f64(model.encode(params, nxt))
    zk = f64(model.next_all(params, z.astype(np.float32), a))  # (K, 4, L)
    om, ov = (f64(x) for x in model.obs_moments(params, obs, a))  # (K, 4, D)
    y = np.sign(nxt) * np.log1p(np.abs(nxt)) - np.sign(obs) * np.log1p(np.abs(obs))
    e = 0.5 * ((zk.var(0) / epi).mean(-1) + (om.var(0) / oepi).mean(-1))
    s_lat = ((zn - zk.mean(0)) ** 2 / (zk.var(0) + res)).mean(-1)
    s_obs = ((y - om.mean(0)) ** 2 / (om.var(0) + ov.mean(0))).mean(-1)
    got = step_scores(model, params, calib, obs, a, nxt)
    np.testing.assert_allclose(got["epistemic"], e, rtol=1e-4)
    np.testing.assert_allclose(got["surprise"], 0.5 * (s_lat + s_obs), rtol=1e-4)
    np.testing.assert_allclose(got["max"], np.maximum(got["epistemic"], got["surprise"]))
    # the signed residuals: obs part, then latent part; their squares' means are the surprise parts
    r_obs = (y - om.mean(0)) / np.sqrt(om.var(0) + ov.mean(0))
    r_lat = (zn - zk.mean(0)) / np.sqrt(zk.var(0) + res)
    np.testing.assert_allclose(
        got["residual"], np.concatenate([r_obs, r_lat], -1), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(got["obs_target"], y, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["obs_error"], y - om.mean(0), rtol=1e-4, atol=1e-5)


def test_prediction_cannot_hand_out_an_abstained_value(tiny):
    model, params = tiny.model(), tiny.perturb(tiny.init_params(0), 1)
    z = jnp.asarray([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0], [1.0, 2.0, -1.0]])  # observations
    a = jnp.asarray([[-1.0], [0.0], [1.0]])
    calib = init_calibration(16, 3)
    pred = predict(model, params, calib, z, a)
    assert not np.asarray(pred.abstained).any()  # uncalibrated: threshold inf
    assert pred.confident().shape == (3, 16)
    low = calib.replace(threshold=jnp.asarray(-1.0))  # every score exceeds it
    pred = predict(model, params, low, z, a)
    assert np.asarray(pred.abstained).all()
    np.testing.assert_array_equal(pred.abstained, np.asarray(pred.score) > -1.0)
    with pytest.raises(Abstained, match="threshold"):
        pred.confident()


@pytest.mark.parametrize("fallback", ["hold", "prior", "stop"])
def test_gate_replaces_the_plan_with_the_fallback_and_says_why(tiny, fallback):
    agent = tiny.make_agent(abstain={"enabled": True, "fallback": fallback})
    state = agent.init(key=jax.random.key(0))
    state = state.replace(params=tiny.perturb(state.params, 2))
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    first = np.ones(2, bool)
    key = jax.random.key(1)
    calib = agent.init_calibration()
    planned, _, info = agent.act(
        state, agent.init_carry(2), obs, first, key=key, explore=False, calib=calib
    )
    assert not info["abstained"].any() and not info["stop"].any()
    low = calib.replace(threshold=jnp.asarray(-1.0))
    act, _, info = agent.act(
        state, agent.init_carry(2), obs, first, key=key, explore=False, calib=low
    )
    assert info["abstained"].all()
    assert np.all(np.asarray(info["score"]) > float(info["threshold"]))
    if fallback == "prior":
        z = agent.model.encode(state.params, obs)
        want = agent.model.pi(state.params, z, key=key)[2]
    else:
        want = np.zeros_like(planned)
    np.testing.assert_allclose(act, want, atol=1e-6)
    assert bool(info["stop"].all()) == (fallback == "stop")
    # disabled gate: the same scores, nothing abstains
    agent_off = tiny.make_agent(abstain={"enabled": False})
    act_off, _, info = agent_off.act(
        state, agent_off.init_carry(2), obs, first, key=key, explore=False, calib=low
    )
    assert not info["abstained"].any()
    np.testing.assert_allclose(act_off, planned, atol=1e-6)


def test_abstain_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="abstain.fallback"):
        AbstainConfig(fallback="panic")
    with pytest.raises(ConfigError, match="abstain.score"):
        AbstainConfig(score="vibes")
    with pytest.raises(ConfigError, match="abstain.alpha"):
        AbstainConfig(alpha=0.0)


def _step(obs, action, nxt, done=False):
    n = obs.shape[0]
    return Step(
        obs=obs, action=action, reward=np.zeros(n, np.float32), next_obs=nxt,
        terminated=np.full(n, done), truncated=np.zeros(n, bool), first=np.full(n, done), episodes=[],
    )  # fmt: skip


def test_replay_never_samples_held_out_episodes_and_returns_them_in_order():
    replay = Replay(100, 1, 1, 1)
    x = 0.0
    for episode in range(6):  # episodes of 5 steps; odd ones held out
        held = np.array([episode % 2 == 1])
        for t in range(5):
            o = np.array([[x]], np.float32)
            replay.add(_step(o, o, o + 1, done=t == 4), holdout=held)
            x += 1
    assert replay.held == 15
    rng = np.random.default_rng(0)
    for pad in (True, False):
        batch = replay.sample(512, 2, rng, pad=pad)
        episode_of = (batch["obs"][:, 0, 0] // 5).astype(int)
        assert np.all(episode_of % 2 == 0)  # no window starts in a held-out episode
        assert len(np.unique(batch["obs"][:, 0, 0])) > 8  # and the trainable ones are all drawn
    stream = replay.holdout_stream(100)
    np.testing.assert_array_equal(
        stream["obs"][:, 0], [5, 6, 7, 8, 9, 15, 16, 17, 18, 19, 25, 26, 27, 28, 29]
    )
    np.testing.assert_array_equal(np.flatnonzero(stream["first"]), [0, 5, 10])
    recent = replay.recent_stream(12)  # every stored transition, held out or not, newest 12
    np.testing.assert_array_equal(recent["obs"][:, 0], np.arange(18, 30))
    np.testing.assert_array_equal(np.flatnonzero(recent["first"]), [0, 2, 7])
    np.testing.assert_array_equal(
        replay.recent_stream(100, since=25)["obs"][:, 0], [25, 26, 27, 28, 29]
    )
    state = replay.state_dict()
    again = Replay(100, 1, 1, 1)
    again.load_state_dict(state)
    assert again.held == 15


def _toy_batch(rng, n, lo, hi):
    """Point dynamics x' = x + 0.1 a on a 3-D obs, x in [lo, hi]."""
    obs = rng.uniform(lo, hi, (n, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    nxt = obs + 0.1 * act
    return obs, act, nxt


def _toy_world(tiny, lo, hi, *, seed):
    """(scorer with the model, params, calibration, rng) of the dynamics ensemble trained on x in
    [lo, hi]^3 only and calibrated on fresh samples of the same region (epistemic, window 1)."""
    model = tiny.model()
    params = tiny.init_params(seed)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(p, obs, act, nxt):
        z, z_next = model.encode(p, obs), jax.lax.stop_gradient(model.encode(p, nxt))
        zk = model.next_all(p, z, act)
        mean, var = model.obs_moments(p, obs, act)  # observation heads: Gaussian NLL
        nll = 0.5 * ((model.obs_target(obs, nxt) - mean) ** 2 / var + jnp.log(var)).mean()
        return ((zk - z_next) ** 2).mean() - 0.1 * z.var(axis=0).mean() + nll

    @jax.jit
    def train_step(p, s, obs, act, nxt):
        g = jax.grad(loss_fn)(p, obs, act, nxt)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(seed)
    for _ in range(400):
        params, opt_state = train_step(params, opt_state, *_toy_batch(rng, 128, lo, hi))

    agent = types.SimpleNamespace(model=model)  # the scorer only needs the model
    o, a, n = _toy_batch(rng, 4096, lo, hi)
    train = {"obs": o, "action": a, "next_obs": n}
    o, a, n = _toy_batch(rng, 2000, lo, hi)
    first = np.zeros(2000, bool)
    first[0] = True  # i.i.d. transitions read as one stream: s_{t-1} is just another sample
    holdout = {"obs": o, "action": a, "next_obs": n, "first": first}
    calib, _ = calibrate(agent, params, train, holdout, kind="epistemic", window=1, alpha=0.05)
    assert int(calib.n) == 2000 and np.isfinite(float(calib.threshold))
    return agent, params, calib, rng


def test_toy_model_abstains_far_from_its_data_and_not_near_it(tiny):
    # Train the dynamics ensemble on x in [-1, 1]^3 only, calibrate on fresh samples of the
    # same region, then compare the false-abstain rate there with the rate at x in [4, 6]^3.
    agent, params, calib, rng = _toy_world(tiny, -1, 1, seed=3)
    fresh_in = score_transitions(agent, params, calib, *_toy_batch(rng, 4000, -1, 1))
    far = score_transitions(agent, params, calib, *_toy_batch(rng, 4000, 4, 6))
    thr = float(calib.threshold)
    rate_in = (fresh_in["epistemic"] > thr).mean()
    rate_far = (far["epistemic"] > thr).mean()
    assert abs(rate_in - 0.05) < 0.02  # i.i.d. here, so conformal is exact up to sampling
    assert rate_far > 0.9


@pytest.fixture(scope="module")
def two_worlds(tiny):
    """(scorer, [World a (trained and calibrated on x in [-1, 1]), World b (on [4, 6])], rng)."""
    a_agent, a_params, a_calib, rng = _toy_world(tiny, -1, 1, seed=3)
    _, b_params, b_calib, _ = _toy_world(tiny, 4, 6, seed=4)
    worlds = [World(_Params(a_params), a_calib, ("ref a",), "a"),
              World(_Params(b_params), b_calib, ("ref b",), "b")]  # fmt: skip
    return a_agent, worlds, rng


class _Params(typing.NamedTuple):  # a model state as the library sees it (a pytree)
    params: dict


def _stream(rng, lo, hi, n=500):
    o, a, nxt = _toy_batch(rng, n, lo, hi)
    first = np.zeros(n, bool)
    first[0] = True
    return {"obs": o, "action": a, "next_obs": nxt, "first": first}


def test_library_recalls_the_stored_world_whose_own_gate_accepts_the_data(two_worlds):
    # Two worlds, each a model trained and calibrated on its own region; a stream from one
    # region is recalled to that world's model from the other, and from neither region to none.
    a_agent, worlds, rng = two_worlds
    a_params, a_calib = worlds[0].state.params, worlds[0].calib

    def stream(lo, hi, n=500):
        return _stream(rng, lo, hi, n)

    def ask(current, lo, hi):
        return recognise(a_agent, worlds, current, stream(lo, hi), kind="epistemic", window=1,
                         level=0.25)  # fmt: skip

    known, report = ask(1, -1, 1)  # deployed in b, the data is a's
    rates, epi, sur = report["rates"], report["epistemic"], report["surprise"]
    assert known == 0 and rates[1] is None and abs(rates[0] - 0.05) < 0.04
    # a's model fits a's data, b's does not (the means cover the current world too)
    assert epi[0] < 2 < 10 * epi[0] < epi[1]
    assert len(sur) == 2 and sur[0] < sur[1]
    known, report = ask(0, 4, 6)  # deployed in a, the data is b's
    assert known == 1 and report["rates"][1] < 0.1
    known, report = ask(0, -1, 1)  # a's data while in a: b's gate refuses it, nothing recalled
    assert known is None and report["rates"][1] > 0.9
    known, report = ask(1, 10, 12)  # a third region: neither gate accepts it
    assert known is None and report["rates"][0] > 0.9
    empty = {k: v[:0] for k, v in stream(-1, 1).items()}
    r = stream_report(a_agent, a_params, a_calib, empty, kind="epistemic", window=1)
    assert all(math.isnan(v) for v in r.values())


class _Lived:
    """What a replay tells a probe: the count of transitions added, the newest ones."""

    def __init__(self):
        self.added, self.parts = 0, []

    def live(self, stream):
        self.added += len(stream["obs"])
        self.parts.append(stream)

    def recent_stream(self, n, *, since):
        assert since + n == self.added  # the probe asks for all it lived through, no more
        return {k: np.concatenate([p[k] for p in self.parts])[-n:] for k in self.parts[0]}


def test_library_probes_a_stored_world_when_the_data_since_the_alarm_is_unlike_every_world(
    two_worlds,
):
    # Deployed in b, an alarm on data from a third region (as acted by b's policy): no gate
    # accepts it, so world a is tried out; what a's model meets while acting decides.
    agent, worlds, rng = two_worlds
    gate = dict(kind="epistemic", window=1, level=0.25)
    trial = dict(gate, alpha=0.05)  # the test worlds keep no reference episodes: level decides

    def alarm(lived, probe_steps=400, returns=()):
        lib = Library(worlds[0].state, worlds[0].calib, worlds[0].reference, "a")
        lib.worlds.append(worlds[1])
        lib.current = 1
        b = worlds[1]
        answer, world, record = lib.on_alarm(
            agent, b.state, b.calib, b.reference, _stream(rng, 10, 12), name="c", step=7,
            probe_steps=probe_steps, returns=returns, **gate,
        )  # fmt: skip
        if not probe_steps:  # no probes configured: a new world at once
            assert (answer, world, lib.current, lib.probe) == ("new", None, 2, None)
            return lib, record
        assert answer == "probe" and world.reference == ("ref a",) and lib.current == 0
        assert record["recalled"] is None and record["probes"] == []
        assert record["answer"] == "probe"
        return lib, record

    lived = _Lived()
    lib, record = alarm(lived)
    lived.live(_stream(rng, 10, 12, n=30))  # the episode handed over: not tested
    assert lib.probe_step(agent, lived, episode_end=False, **trial) is None
    assert lib.probe_step(agent, lived, episode_end=True, **trial) is None
    lived.parts = []
    lived.live(_stream(rng, -1, 1, n=300))  # a's world, acted by a: too few yet
    assert lib.probe_step(agent, lived, episode_end=True, **trial) is None
    lived.live(_stream(rng, -1, 1, n=200))
    assert lib.probe_step(agent, lived, episode_end=False, **trial) is None  # mid-episode
    verdict = lib.probe_step(agent, lived, episode_end=True, **trial)
    assert verdict[0] == "recall" and verdict[1].reference == ("ref a",)
    assert lib.current == 0 and lib.probe is None and record["recalled"] == 0
    assert record["answer"] == "recall"
    (probe,) = record["probes"]
    assert probe["world"] == 0 and probe["abstain"] < 0.15

    # now a's model meets a fourth region: a new world, learnt from the model that did best
    # in it (b's episodes since the detection returned 10 on average; the probe's, given)
    for probe_return, source, ref in ((50.0, 0, "ref a"), (5.0, 1, "ref b"), (None, 1, "ref b")):
        lived = _Lived()
        lib, record = alarm(lived, returns=[] if probe_return is None else [0.0, 20.0])
        # the handover episode's return is b's policy's, not a's
        assert lib.probe_step(agent, lived, episode_end=True, returns=[99.0], **trial) is None
        lived.live(_stream(rng, -8, -6, n=500))
        shown = [] if probe_return is None else [probe_return]
        verdict = lib.probe_step(agent, lived, episode_end=True, returns=shown, **trial)
        assert verdict[0] == "new" and verdict[1].reference == (ref,)  # fine-tune its copy
        assert record["forked_from"] == source
        assert record["returns_shown"] == (
            {} if probe_return is None else {1: 10.0, 0: probe_return}
        )
    assert lib.probe is None and record["recalled"] is None and record["answer"] == "new"
    assert record["probes"][0]["abstain"] > 0.9
    assert [w.name for w in lib.worlds] == ["a", "b", "c"] and lib.current == 2
    assert lib.worlds[2].state is None  # stored at its own next alarm
    alarm(_Lived(), probe_steps=0)


def test_probe_verdict_ranks_the_probe_among_the_worlds_own_episodes():
    # threshold 1: reference episodes abstaining on 0, 0, 0.5 and 0.5 of their decisions
    calib = init_calibration(2, 2, alpha=0.05).replace(threshold=jnp.asarray(1.0))
    episodes = [np.array([0.1, 0.2]), np.array([0.5]), np.array([2.0, 0.3]),
                np.array([3.0, 2.0, 0.1, 0.1])]  # fmt: skip
    world = World(None, calib, (np.concatenate(episodes), episodes, [False] * 4), "w")
    # p = (1 + #{shares >= rate}) / 5
    assert probe_verdict(0.5, world, level=0.25, alpha=0.3) == (True, 3 / 5)  # ties count
    assert probe_verdict(0.3, world, level=0.25, alpha=0.5) == (True, 3 / 5)
    assert probe_verdict(0.3, world, level=0.25, alpha=0.6) == (False, 3 / 5)
    assert probe_verdict(0.9, world, level=0.25, alpha=0.3) == (False, 1 / 5)
    assert probe_verdict(0.9, world, level=0.25, alpha=0.2) == (False, 1 / 5)  # p <= alpha
    # alpha 0.15 < 1 / 5, the smallest p 4 episodes allow: the test could never refuse, so it
    # must not accept either; `level` alone decides
    assert probe_verdict(0.9, world, level=0.25, alpha=0.15) == (False, 1 / 5)
    assert probe_verdict(0.2, world, level=0.25, alpha=0.15) == (True, 3 / 5)
    assert probe_verdict(0.9, world, level=0.95, alpha=0.3)[0]  # under `level`: recalled
    no_reference = World(None, calib, (np.zeros(0), [], []), "w")
    known, p = probe_verdict(0.3, no_reference, level=0.25, alpha=0.05)
    assert not known and math.isnan(p)

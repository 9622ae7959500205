"""Agent: no retracing across calls (also inside the training loop, with a step-counting env),
checkpoint round trip reproduces the next action and update, policy-only mode."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents.trainer as trainer_mod
from envs.dummy import PointMassEnv
from worldmodel.checkpoint import Checkpointer
from worldmodel.config import load_config
from worldmodel.model import WorldModel

COUNTING_ID = "worldmodel-test/CountingPointMass-v0"


class CountingPointMass(PointMassEnv):
    """The point mass, counting its raw `step` calls per instance."""

    instances: list = []

    def __init__(self):
        super().__init__()
        self.steps = 0
        CountingPointMass.instances.append(self)

    def step(self, action):
        self.steps += 1
        return super().step(action)


if COUNTING_ID not in gym.registry:
    gym.register(id=COUNTING_ID, entry_point=CountingPointMass, max_episode_steps=50)


@pytest.fixture
def trace_counter(monkeypatch):
    """Counts Python executions of WorldModel.encode: once per trace of act, twice per update."""
    calls = {"n": 0}
    original = WorldModel.encode

    def encode(self, params, obs):
        calls["n"] += 1
        return original(self, params, obs)

    monkeypatch.setattr(WorldModel, "encode", encode)
    return calls


def _obs(rng, n):
    return rng.normal(size=(n, 3)).astype(np.float32)


def test_act_and_update_trace_once(tiny, trace_counter):
    agent = tiny.make_agent()
    state = agent.init(key=jax.random.key(0))
    carry = agent.init_carry(1)
    rng = np.random.default_rng(0)
    traces = []  # Python executions of encode after each round: one trace of act and of update
    for i in range(6):  # fresh numpy inputs, new keys and values, same shapes
        action, carry, info = agent.act(
            state, carry, _obs(rng, 1), rng.random(1) < 0.5, key=jax.random.key(i), explore=True
        )
        assert action.shape == (1, 1) and carry.plan_mean.shape == (1, 3, 1)
        assert float(jnp.abs(action).max()) <= 1.0
        state, metrics = agent.update(state, tiny.random_batch(i), key=jax.random.key(100 + i))
        traces.append(trace_counter["n"])
    assert traces[0] > 0 and traces == [traces[0]] * 6
    assert agent._act._cache_size() == 1
    assert agent.update._cache_size() == 1
    for i in range(3):  # a second mode compiles once more, and only once
        agent.act(
            state,
            agent.init_carry(2),
            _obs(rng, 2),
            np.zeros(2, bool),
            key=jax.random.key(i),
            explore=False,
        )
        traces.append(trace_counter["n"])
    assert traces[6] > traces[5] and traces[6:] == [traces[6]] * 3
    assert agent._act._cache_size() == 2


def test_training_loop_steps_and_compiles(monkeypatch, tmp_path):
    cfg = load_config(
        [
            "debug",
            f"env.id={COUNTING_ID}",
            "env.action_repeat=2",
            "train.steps=160",
            "train.seed_steps=40",
            "eval.every=80",
            "checkpoint.every=80",
            "log.every=40",
            "abstain.holdout=0.5",
        ]
    )
    created, agents = {}, []
    real_make_env, real_make_agent = trainer_mod.make_env, trainer_mod.make_agent

    def make_env(*args, **kwargs):
        before = len(CountingPointMass.instances)
        env = real_make_env(*args, **kwargs)
        created["train"] = CountingPointMass.instances[before:]
        return env

    def make_agent(*args, **kwargs):
        agents.append(real_make_agent(*args, **kwargs))
        return agents[-1]

    monkeypatch.setattr(trainer_mod, "make_env", make_env)
    monkeypatch.setattr(trainer_mod, "make_agent", make_agent)
    events = []
    result = trainer_mod.train(cfg, tmp_path, emit=lambda *e: events.append(e))

    env_steps = result["step"]
    assert env_steps >= 160
    assert len(created["train"]) == 1
    assert sum(env.steps for env in created["train"]) == env_steps  # raw steps, repeat included
    kinds = [k for k, _, _ in events]
    assert kinds.count("eval") == 2 and kinds.count("checkpoint") == 2
    train_events = [d for k, _, d in events if k == "train"]
    assert train_events and all(np.isfinite(d["loss"]) for d in train_events)
    (agent,) = agents
    # explore (training), greedy at 1 env (held-out calibration episodes act as deployed) and
    # greedy at eval.episodes envs (evaluation), planning and the prior alone (eval.prior_too);
    # recalibrating must not add a compile.
    assert [d for k, _, d in events if k == "calibration"]
    assert all("prior" in d for k, _, d in events if k == "eval")
    assert agent._act._cache_size() == 4
    assert agent.update._cache_size() == 1


def test_checkpoint_round_trip_reproduces_next_act_and_update(tiny, tmp_path):
    agent = tiny.make_agent()
    state = agent.init(key=jax.random.key(0))
    for i in range(3):
        state, _ = agent.update(state, tiny.random_batch(i), key=jax.random.key(i))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(3, state=state, replay={"x": np.arange(4)}, meta={"updates": 3})
    fresh = tiny.make_agent()  # as a new process would build it
    template = fresh.init(key=jax.random.key(99))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        restored, replay, meta = ckpt.restore(template)
    assert meta == {"updates": 3} and replay["x"].tolist() == [0, 1, 2, 3]
    assert int(restored.step) == 3

    obs, first, key = _obs(np.random.default_rng(1), 1), np.array([False]), jax.random.key(5)
    warm = jnp.full((1, 3, 1), 0.3, jnp.float32)
    a1, c1, _ = agent.act(
        state, agent.init_carry(1).replace(plan_mean=warm), obs, first, key=key, explore=True
    )
    a2, c2, _ = fresh.act(
        restored, fresh.init_carry(1).replace(plan_mean=warm), obs, first, key=key, explore=True
    )
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1.plan_mean, c2.plan_mean)

    batch, key = tiny.random_batch(10), jax.random.key(6)
    s1, m1 = agent.update(state, batch, key=key)
    s2, m2 = fresh.update(restored, batch, key=key)
    for x, y in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s2, m2)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the template's own (different) weights would not have reproduced it
    s3, _ = fresh.update(fresh.init(key=jax.random.key(99)), batch, key=key)
    assert not np.array_equal(
        np.asarray(s3.params["pi"]["Dense_2"]["kernel"]),
        np.asarray(s1.params["pi"]["Dense_2"]["kernel"]),
    )


def test_act_compiles_once_after_restore(tiny, tmp_path):
    agent = tiny.make_agent()
    state = agent.init(key=jax.random.key(0))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(0, state=state, replay={}, meta={})
        restored, _, _ = ckpt.restore(state)
    carry, rng = agent.init_carry(1), np.random.default_rng(0)
    for i in range(3):
        _, carry, _ = agent.act(
            restored, carry, _obs(rng, 1), np.zeros(1, bool), key=jax.random.key(i), explore=True
        )
    assert agent._act._cache_size() == 1


def test_policy_only_mode_returns_prior_mean(tiny):
    agent = tiny.make_agent()
    state = agent.init(key=jax.random.key(0))
    obs = _obs(np.random.default_rng(2), 4)
    carry = agent.init_carry(4).replace(plan_mean=jnp.full((4, 3, 1), 0.25, jnp.float32))
    key = jax.random.key(3)
    action, new_carry, _ = agent.act(
        state, carry, obs, np.ones(4, bool), key=key, explore=False, plan=False
    )
    model = agent.model
    z = jax.jit(model.encode)(state.params, obs)
    expected = jax.jit(model.pi)(state.params, z, key=jax.random.key(0))[2]
    np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(expected).max()) > 0.05  # a non-trivial mean
    np.testing.assert_array_equal(
        new_carry.plan_mean, carry.plan_mean
    )  # no planning, no warm start
    noisy, _, _ = agent.act(state, carry, obs, np.ones(4, bool), key=key, explore=True, plan=False)
    assert bool((jnp.abs(noisy) <= 1).all())
    assert float(jnp.abs(noisy - action).max()) > 1e-4  # explore samples around the mean

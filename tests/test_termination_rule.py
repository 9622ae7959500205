"""The known termination rule (model.termination_from='bounds'): each task overlay's
`termination_bounds` agrees with the real env's `terminated`, and a model trained with it flags
terminal states it never trained on, because the head regresses obs dims (dense) instead of
classifying rare terminal steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.factory import make_single_env
from worldmodel.config import load_config
from worldmodel.errors import ConfigError
from worldmodel.model import make_world_model


def _rule_ends(rule, obs: np.ndarray) -> bool:
    return any(not low < obs[i] < high for i, low, high in rule)


@pytest.mark.parametrize("task", ["hopper", "walker2d", "inverted_pendulum"])
def test_overlay_rule_matches_env_terminations(task):
    """Random-action episodes: the rule on every next observation says `terminated` exactly."""
    cfg = load_config([task, "model.termination_from=bounds"])
    env = make_single_env(cfg.env.id)
    model = make_world_model(
        env.observation_space.shape[0], env.action_space.shape[0], **cfg.model.to_dict()
    )
    hash(model)  # built from a config slice (lists), it is still a static jit argument
    rng = np.random.default_rng(0)
    ends = 0
    for ep in range(15):
        env.reset(seed=ep)
        for _ in range(300):
            obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
            assert _rule_ends(model.rule, obs) == terminated, (task, ep, obs)
            ends += terminated
            if terminated or truncated:
                break
    env.close()
    assert ends >= 10, ends  # the rule was really exercised on terminal steps


def test_bounds_mode_needs_a_rule_and_a_valid_one():
    with pytest.raises(ConfigError, match="termination_bounds"):
        make_world_model(3, 1, termination_from="bounds")
    with pytest.raises(ConfigError, match="low < high"):
        make_world_model(3, 1, termination_bounds=((0, 1.0, 0.0),))
    with pytest.raises(ConfigError, match="obs index in 0..2"):
        make_world_model(3, 1, termination_bounds=((3, 0.0, 1.0),))


def test_rule_flags_held_out_terminal_states(tiny):
    """Train on states inside |obs[0]| < 1 only (no terminal step at all) with the rule
    'obs[0] in (-0.6, 0.6)'; the head reads obs[0] off the latent, so on held-out states the
    rule fires where it should although no training step was terminal."""
    from worldmodel.losses import LossConfig
    from worldmodel.update import OptimConfig, make_train

    model = dataclasses.replace(
        tiny.model(), termination_from="bounds", termination_bounds=((0, -0.6, 0.6),)
    )
    cfg = LossConfig(encoded_continue_coef=1.0)
    init, update = make_train(model, cfg, OptimConfig(lr=3e-3))
    state = init(key=jax.random.key(0))
    rng = np.random.default_rng(0)
    for i in range(300):
        batch = tiny.random_batch(i, batch=32, horizon=3, terminated=0.0, padded=False)
        batch["obs"][..., 0] = rng.uniform(-1, 1, batch["obs"].shape[:2])
        state, _ = update(state, batch, key=jax.random.key(i))
    obs = rng.normal(size=(400, 3)).astype(np.float32)
    obs[:, 0] = rng.uniform(-1, 1, 400)
    z = model.encode(state.params, jnp.asarray(obs))
    p = np.asarray(model.termination(state.params, z, jnp.zeros((400, 1)), z))
    clear = np.abs(np.abs(obs[:, 0]) - 0.6) > 0.15  # away from the edge
    want = np.abs(obs[:, 0]) > 0.6
    acc = ((p > 0.5) == want)[clear].mean()
    assert acc > 0.9, acc


def test_termination_is_the_rule_on_the_dims_read_from_the_latent_reached(tiny):
    """P(terminated) depends on z_next alone and is the rule (0 or 1 away from an edge) applied
    to `bounded_obs(z_next)`."""
    base = dataclasses.replace(
        tiny.model(), termination_from="bounds", termination_bounds=((0, 0.0, None), (2, 0.0, 1.0))
    )
    params = tiny.perturb(jax.jit(lambda k: base.init(key=k))(jax.random.key(0)), seed=3)
    rng = np.random.default_rng(1)
    z, z_next = (
        jax.nn.softmax(jnp.asarray(rng.normal(size=(200, base.latent_dim)) * 3)) for _ in "ab"
    )
    a = jnp.asarray(rng.uniform(-1, 1, (200, 1)), jnp.float32)
    x = np.asarray(base.bounded_obs(params, z_next))  # (200, 2): obs dims 0 and 2
    q = np.quantile(x, [0.1, 0.2, 0.9], axis=0)  # a rule that cuts through these values
    rule = ((0, float(q[1, 0]), None), (2, float(q[0, 1]), float(q[2, 1])))
    model = dataclasses.replace(base, termination_bounds=rule)
    p = np.asarray(model.termination(params, z, a, z_next))
    want = np.array([_rule_ends(((0, q[1, 0], np.inf), (1, q[0, 1], q[2, 1])), r) for r in x])
    assert 0.2 < want.mean() < 0.6  # both outcomes occur
    np.testing.assert_array_equal(p > 0.5, want)
    edge = np.abs(np.asarray(model.bounds_margin(jnp.asarray(x)))) > 0.02
    assert edge.mean() > 0.5 and np.minimum(p, 1 - p)[edge].max() < 1e-6
    np.testing.assert_array_equal(p, np.asarray(model.termination(params, z[::-1], -a, z_next)))

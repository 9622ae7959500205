"""MPPI planner: converges on a toy problem, the scanned value function equals a loop, and plan()'s
warm start / first flag / action bounds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.planner import (
    PlannerConfig,
    make_latent_step,
    make_planner,
    make_value_fn,
    mppi,
    select_action,
)
from worldmodel.errors import ConfigError

DISCOUNT = 0.9


def test_mppi_finds_a_known_optimum():
    H, A = 3, 2
    target = jnp.array([[0.5, -0.7], [-0.2, 0.9], [0.8, 0.1]])
    cfg = PlannerConfig(iterations=12, num_samples=128, num_elites=16, temperature=4.0)

    @jax.jit
    def run(key, fixed):
        score = lambda acts, _k: -jnp.sum((acts - target) ** 2, axis=(1, 2))  # noqa: E731
        return mppi(score, jnp.zeros((H, A)), fixed, cfg, key=key)

    far = jnp.full((1, H, A), -1.0)  # a poor fixed candidate
    mean, std, elites, weights, best = run(jax.random.key(0), far)
    np.testing.assert_allclose(mean, target, atol=0.05)
    assert float(std.max()) < 0.1  # the search narrowed from max_std
    assert elites.shape == (16, H, A) and weights.shape == (16,)
    np.testing.assert_allclose(float(weights.sum()), 1.0, rtol=1e-5)
    assert float(best) > -0.05
    # a fixed candidate (e.g. from the prior) that is the optimum is always scored: best = 0
    *_, best_fixed = run(jax.random.key(0), target[None])
    assert float(best_fixed) == 0.0


@pytest.fixture(scope="module")
def world(tiny):
    model = tiny.model()
    params = tiny.perturb(tiny.init_params(0), seed=4)
    return model, params


def _reference_value(model, params, z, actions, key, mode, value="mean"):
    """Python loop: sum_t g^t alive_t r_t + g^H alive_H Q(z_H, pi(z_H)), per-candidate heads."""
    N, H, _ = actions.shape
    K = model.num_heads
    per_head = -(-N // K)  # 'split': candidates are dealt to heads in contiguous blocks
    key_head, key = jax.random.split(key)  # as make_value_fn: the head draw, then the prior
    if mode == "random":  # one head for every candidate, drawn from the key
        head = np.full(N, int(jax.random.randint(key_head, (), 0, K)))
    else:
        head = np.arange(N) // per_head
    reward, next_all = jax.jit(model.reward), jax.jit(model.next_all)
    termination = jax.jit(model.termination)
    ret, alive = np.zeros(N), np.ones(N)
    for t in range(H):
        r = reward(params, z, actions[:, t])
        ret += DISCOUNT**t * alive * np.asarray(r, np.float64)
        zk = next_all(params, z, actions[:, t])  # (K, N, L)
        z_next = zk.mean(0) if mode == "mean" else zk[head, np.arange(N)]
        p_term = termination(params, z, actions[:, t], z_next)  # of the latent reached
        alive *= 1.0 - np.asarray(p_term, np.float64)
        z = z_next
    a_last = jax.jit(model.pi)(params, z, key=key)[0]
    q = np.asarray(jax.jit(model.q_values)(params["q"], z, a_last), np.float64)
    q = q.min(0) if value == "min" else q.mean(0)
    return ret + DISCOUNT**H * alive * q


@pytest.mark.parametrize("mode", ["split", "mean", "random"])
def test_value_fn_equals_python_loop(world, mode):
    model, params = world
    N, H = 10, 3  # 10 is not a multiple of K = 3: padding is exercised
    cfg = PlannerConfig(horizon=H, ensemble=mode)
    rng = np.random.default_rng(0)
    z = jax.nn.softmax(jnp.asarray(rng.normal(size=(N, model.latent_dim)) * 2, jnp.float32))
    actions = jnp.asarray(rng.uniform(-1, 1, (N, H, model.act_dim)), jnp.float32)
    key = jax.random.key(3)
    got = jax.jit(make_value_fn(model, cfg, DISCOUNT))(params, z, actions, key=key)
    ref = _reference_value(model, params, z, actions, key, mode)
    assert got.shape == (N,)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    other = "mean" if mode == "split" else "split"
    assert np.abs(ref - _reference_value(model, params, z, actions, key, other)).max() > 1e-4


def test_value_fn_min_critic_equals_python_loop(world):
    model, params = world
    N, H = 6, 2
    rng = np.random.default_rng(5)
    z = jax.nn.softmax(jnp.asarray(rng.normal(size=(N, model.latent_dim)) * 2, jnp.float32))
    actions = jnp.asarray(rng.uniform(-1, 1, (N, H, model.act_dim)), jnp.float32)
    key = jax.random.key(2)
    cfg = PlannerConfig(horizon=H, ensemble="mean", value="min")
    got = jax.jit(make_value_fn(model, cfg, DISCOUNT))(params, z, actions, key=key)
    ref = _reference_value(model, params, z, actions, key, "mean", value="min")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    mean_ref = _reference_value(model, params, z, actions, key, "mean")
    assert (ref <= mean_ref + 1e-9).all() and (ref < mean_ref - 1e-6).any()


@pytest.mark.parametrize("mode", ["split", "mean", "random"])
def test_identical_candidates_step_alike_unless_split(world, mode):
    """MPPI ranks candidates: under 'split' the same plan is imagined differently by the head it
    was dealt, so the top ranks favour the most optimistic head (winner's curse; measured: it
    collapsed a solved InvertedPendulum agent to 76, 'random' at equal cost scored 1000)."""
    model, params = world
    N = 9
    rng = np.random.default_rng(0)
    z = jax.nn.softmax(jnp.asarray(rng.normal(size=model.latent_dim) * 2, jnp.float32))
    a = jnp.asarray(rng.uniform(-1, 1, model.act_dim), jnp.float32)
    step = jax.jit(make_latent_step(model, mode))
    nxt = np.asarray(
        step(params, jnp.broadcast_to(z, (N, z.size)), jnp.broadcast_to(a, (N, a.size)), 1)
    )
    spread = np.abs(nxt - nxt[0]).max()
    if mode == "split":
        assert spread > 1e-4
    else:
        assert spread == 0.0


def test_value_fn_rejects_unknown_ensemble_mode(world):
    with pytest.raises(ConfigError, match="ensemble"):
        make_value_fn(world[0], PlannerConfig(ensemble="median"), DISCOUNT)


def test_plan_bounds_warm_start_and_first(world, tiny):
    model, params = world
    cfg = PlannerConfig(**tiny.sections["planner"])
    cfg = dataclasses.replace(cfg, iterations=3, greedy="mean")
    H, A = cfg.horizon, model.act_dim
    plan = jax.jit(make_planner(model, cfg, discount=DISCOUNT), static_argnames="explore")
    z = jax.jit(model.encode)(params, jnp.array([0.3, -0.1, 0.5]))
    rng = np.random.default_rng(1)
    warm1 = jnp.asarray(rng.uniform(-1, 1, (H, A)), jnp.float32)
    warm2 = -warm1
    key = jax.random.key(7)

    # (explore=True, which adds noise before clipping, is bounds-checked in test_agent.py)
    a1, m1, info = plan(params, z, warm1, True, key=key, explore=False)
    a2, m2, _ = plan(params, z, warm2, True, key=key, explore=False)
    assert a1.shape == (A,) and m1.shape == (H, A) and set(info) >= {"plan_value", "plan_std"}
    assert bool((jnp.abs(m1) <= 1.0).all())
    np.testing.assert_array_equal(a1, jnp.clip(m1[0], -1, 1))  # greedy: the MPPI mean
    np.testing.assert_array_equal(a1, a2)  # first=True: the warm start is ignored
    np.testing.assert_array_equal(m1, m2)

    b1, n1, _ = plan(params, z, warm1, False, key=key, explore=False)
    b2, n2, _ = plan(params, z, warm2, False, key=key, explore=False)
    assert not np.array_equal(n1, n2)  # first=False: the warm start is used
    # ... shifted by one step: its first entry is dropped, so changing it changes nothing
    warm3 = warm1.at[0].set(-warm1[0] + 0.5)
    b3, n3, _ = plan(params, z, warm3, False, key=key, explore=False)
    np.testing.assert_array_equal(b1, b3)
    np.testing.assert_array_equal(n1, n3)


def test_select_action_on_two_equally_good_modes():
    # Half the elites push left (-0.8), half right (+0.8), equal weights: the mean is 0, a plan
    # no elite proposed; 'sample' and 'best' return one of the modes, 'best' the top weight.
    elites = jnp.concatenate([jnp.full((4, 2, 1), -0.8), jnp.full((4, 2, 1), 0.8)])
    weights = jnp.full((8,), 1 / 8)
    mean = jnp.einsum("e,eha->ha", weights, elites)
    std = jnp.full((2, 1), 0.3)
    key = jax.random.key(0)
    pick = lambda greedy, w=weights, explore=False, k=key: select_action(  # noqa: E731
        mean, std, elites, w, greedy, key=k, explore=explore
    )
    np.testing.assert_allclose(pick("mean"), [0.0], atol=1e-7)
    draws = {round(float(pick("sample", k=jax.random.key(i))[0]), 6) for i in range(20)}
    assert draws == {-0.8, 0.8}  # each mode, never their average
    assert float(pick("best", w=weights.at[5].set(0.3))[0]) == pytest.approx(0.8)
    assert float(pick("best", w=weights.at[1].set(0.3))[0]) == pytest.approx(-0.8)
    # exploring: the drawn elite plus noise of the final std
    noisy = np.array(
        [float(pick("sample", explore=True, k=jax.random.key(i))[0]) for i in range(200)]
    )
    assert np.all(np.abs(np.abs(noisy) - 0.8) < 5 * 0.3) and 0.1 < noisy.std() < 1.0
    assert (noisy > 0).mean() == pytest.approx(0.5, abs=0.15)


def test_center_prior_searches_around_the_prior_mean(world, tiny):
    """planner.center=prior: the first sampling mean is the prior's mean action rollout, so a
    search with a tiny std and no prior samples returns the prior's mean action, whatever the
    warm start; center=warm does not."""
    model, params = world
    cfg = PlannerConfig(**tiny.sections["planner"])
    cfg = dataclasses.replace(cfg, num_pi_trajs=0, min_std=1e-4, max_std=1e-4, greedy="best")
    z = jax.jit(model.encode)(params, jnp.array([0.3, -0.1, 0.5]))
    warm = jnp.full((cfg.horizon, model.act_dim), -0.4)
    prior_action = np.asarray(jax.jit(model.pi)(params, z, key=jax.random.key(0))[2])
    got = {}
    for center in ("prior", "warm"):
        c = dataclasses.replace(cfg, center=center)
        plan = jax.jit(make_planner(model, c, discount=DISCOUNT), static_argnames="explore")
        got[center] = np.asarray(
            plan(params, z, warm, False, key=jax.random.key(2), explore=False)[0]
        )
    np.testing.assert_allclose(got["prior"], prior_action, atol=1e-3)
    np.testing.assert_allclose(got["warm"], -0.4, atol=1e-3)  # the shifted warm start instead
    assert np.abs(prior_action + 0.4).min() > 0.05
    with pytest.raises(ConfigError, match="planner.center"):
        make_planner(model, dataclasses.replace(cfg, center="policy"), discount=DISCOUNT)

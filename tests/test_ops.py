"""worldmodel.ops against hand-computed numbers: symlog, two-hot, soft CE, BCE, SimNorm, tanh-Gaussian."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from worldmodel import ops


def test_symlog_symexp_values_and_inverse():
    x = jnp.array([0.0, 1.0, -3.0, math.e - 1.0])
    np.testing.assert_allclose(ops.symlog(x), [0.0, math.log(2), -math.log(4), 1.0], rtol=1e-6)
    np.testing.assert_allclose(
        ops.symexp(jnp.array([math.log(2), -math.log(4), 0.0])), [1.0, -3.0, 0.0], rtol=1e-6
    )
    big = jnp.array([-1e4, -7.5, -1e-3, 0.0, 2e-3, 0.5, 42.0, 1e4])
    np.testing.assert_allclose(ops.symexp(ops.symlog(big)), big, rtol=1e-5)


# 5 bins on [-2, 2]: centres -2, -1, 0, 1, 2 (symlog space). x is chosen by its symlog value.
@pytest.mark.parametrize(
    ("symlog_x", "expected"),
    [
        (1.0, [0, 0, 0, 1, 0]),  # exactly on a centre
        (0.0, [0, 0, 1, 0, 0]),
        (0.25, [0, 0, 0.75, 0.25, 0]),  # between 0 and 1
        (-1.5, [0.5, 0.5, 0, 0, 0]),
        (2.0, [0, 0, 0, 0, 1]),  # the top centre itself
        (13.8, [0, 0, 0, 0, 1]),  # clipped above
        (-13.8, [1, 0, 0, 0, 0]),  # clipped below
    ],
)
def test_two_hot_by_hand(symlog_x, expected):
    x = math.copysign(math.expm1(abs(symlog_x)), symlog_x)
    np.testing.assert_allclose(ops.two_hot(jnp.float32(x), 5, -2.0, 2.0), expected, atol=1e-6)


def test_two_hot_batched_shape_and_inverse():
    x = jnp.array([[-50.0, -0.3, 0.0], [2.5, 1000.0, 7.0]])
    enc = ops.two_hot(x, 21, -10.0, 10.0)
    assert enc.shape == (2, 3, 21)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
    assert int((enc > 0).sum(-1).max()) <= 2
    np.testing.assert_allclose(ops.two_hot_inv(jnp.log(enc), -10.0, 10.0), x, rtol=1e-4)


def test_soft_ce_hand_computed():
    # 3 bins on [-1, 1]; symlog(target) = 0.5 -> two-hot [0, .5, .5];
    # CE = -(.5 (1 - L) + .5 (2 - L)) = L - 1.5 with L = log(1 + e + e^2).
    target = jnp.float32(math.expm1(0.5))
    expected = math.log(1 + math.e + math.e**2) - 1.5  # 0.9076059644
    got = ops.soft_ce(jnp.array([0.0, 1.0, 2.0]), target, 3, -1.0, 1.0)
    assert float(got) == pytest.approx(0.9076059644, abs=1e-6)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_sigmoid_bce_matches_naive_and_is_stable():
    logit = np.array([-3.0, -0.5, 0.0, 2.0])[:, None]
    target = np.array([0.0, 0.3, 1.0])[None, :]
    p = 1 / (1 + np.exp(-logit))
    naive = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    np.testing.assert_allclose(
        ops.sigmoid_bce(jnp.asarray(logit), jnp.asarray(target)), naive, rtol=1e-5
    )
    big = jnp.array([100.0, 100.0, -100.0, -100.0])
    t = jnp.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(ops.sigmoid_bce(big, t), [0.0, 100.0, 0.0, 100.0], atol=1e-4)
    grad = jax.grad(lambda logit: ops.sigmoid_bce(logit, t).sum())(big)
    np.testing.assert_allclose(grad, [0.0, 1.0, 0.0, -1.0], atol=1e-6)  # sigmoid(l) - t


def test_simnorm_groups_are_softmaxes():
    x = jax.random.normal(jax.random.key(0), (2, 12)) * 3
    y = ops.simnorm(x, 4)
    assert y.shape == (2, 12) and bool((y > 0).all())
    np.testing.assert_allclose(y.reshape(2, 3, 4).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        ops.simnorm(jnp.array([0.0, math.log(3)]), 2), [0.25, 0.75], rtol=1e-6
    )


def test_tanh_gaussian_log_prob_is_change_of_variables():
    mean = jnp.array(np.linspace(-1, 1, 12).reshape(4, 3), jnp.float32)
    log_std = jnp.array(np.linspace(-1, 0, 12)[::-1].reshape(4, 3), jnp.float32)
    a, log_prob = ops.tanh_gaussian_sample(mean, log_std, key=jax.random.key(3))
    assert a.shape == (4, 3) and log_prob.shape == (4,)
    a64 = np.asarray(a, np.float64)
    assert np.abs(a64).max() < 0.999  # keeps arctanh well conditioned
    u = np.arctanh(a64)
    ref = (
        stats.norm.logpdf(u, np.asarray(mean), np.exp(np.asarray(log_std))) - np.log(1 - a64**2)
    ).sum(-1)
    np.testing.assert_allclose(log_prob, ref, rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_saturated_log_prob_is_finite():
    # u = 20 +- tiny: tanh(u) == 1 in float32, but the stable correction stays finite.
    mean, log_std = jnp.full((1, 2), 20.0), jnp.full((1, 2), -8.0)
    key = jax.random.key(0)
    a, log_prob = ops.tanh_gaussian_sample(mean, log_std, key=key)
    np.testing.assert_array_equal(a, 1.0)
    eps = np.asarray(jax.random.normal(key, (1, 2)), np.float64)
    u = 20.0 + np.exp(-8.0) * eps
    log_1m_tanh2 = np.log(4.0) - 2 * u - 2 * np.log1p(np.exp(-2 * u))  # exact identity
    ref = (stats.norm.logpdf(u, 20.0, np.exp(-8.0)) - log_1m_tanh2).sum(-1)
    assert np.isfinite(np.asarray(log_prob)).all()
    np.testing.assert_allclose(log_prob, ref, rtol=1e-5)


def test_sigmoid_bce_gradient_is_sigmoid_minus_target_at_zero():
    # A zero-initialised termination logit sits exactly at 0; its gradient must not vanish there.
    for target in (0.0, 0.3, 1.0):
        g = float(jax.grad(ops.sigmoid_bce)(0.0, target))
        np.testing.assert_allclose(g, 0.5 - target, atol=1e-7)


def test_termination_head_learns_never_terminates(tiny):
    """On data without terminations, p_term falls from 0.5 toward 0 (it was stuck at 0.5)."""
    from worldmodel.losses import LossConfig
    from worldmodel.update import OptimConfig, make_train

    model = tiny.model()
    init, update = make_train(model, LossConfig(), OptimConfig(lr=1e-3))
    state = init(key=jax.random.key(0))
    batch = tiny.random_batch(1, batch=16, horizon=3, terminated=0.0)
    a = jnp.asarray(batch["action"][:, 0])

    def p_term(params):
        z, z_next = model.encode(params, jnp.asarray(batch["obs"][:, :2]).swapaxes(0, 1))
        return float(model.termination(params, z, a, z_next).mean())

    assert abs(p_term(state.params) - 0.5) < 1e-6
    for i in range(50):
        state, _ = update(state, batch, key=jax.random.key(i))
    assert p_term(state.params) < 0.4  # stayed exactly 0.5 before

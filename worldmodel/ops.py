"""Small numeric building blocks: symlog, two-hot discrete regression, SimNorm, tanh-Gaussian.

Pure JAX, no parameters. Shapes are written as (..., X) where leading axes are free.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def symlog(x: jax.Array) -> jax.Array:
    """sign(x) * log(1 + |x|): compresses large magnitudes so one bin range fits all tasks."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """Inverse of `symlog`."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def bin_centers(num_bins: int, vmin: float, vmax: float) -> jax.Array:
    """(num_bins,) equally spaced centres in symlog space."""
    return jnp.linspace(vmin, vmax, num_bins)


def two_hot(x: jax.Array, num_bins: int, vmin: float, vmax: float) -> jax.Array:
    """Encode scalars (...,) as two-hot vectors (..., num_bins) over symlog-spaced bins.

    The mass is split between the two nearest bin centres so that the expectation of the
    centres under the vector equals symlog(x) exactly (inside [vmin, vmax]).
    """
    y = jnp.clip(symlog(x), vmin, vmax)
    width = (vmax - vmin) / (num_bins - 1)
    pos = (y - vmin) / width
    lo = jnp.clip(jnp.floor(pos), 0, num_bins - 2).astype(jnp.int32)
    frac = pos - lo
    return (
        jax.nn.one_hot(lo, num_bins) * (1.0 - frac)[..., None]
        + jax.nn.one_hot(lo + 1, num_bins) * frac[..., None]
    )


def two_hot_inv(logits: jax.Array, vmin: float, vmax: float) -> jax.Array:
    """Decode logits (..., num_bins) to scalars (...,): symexp of the expected bin centre."""
    centers = bin_centers(logits.shape[-1], vmin, vmax)
    return symexp(jnp.sum(jax.nn.softmax(logits, axis=-1) * centers, axis=-1))


def soft_ce(logits: jax.Array, target: jax.Array, num_bins: int, vmin: float, vmax: float):
    """Cross-entropy (...,) between logits (..., num_bins) and the two-hot encoding of target (...,)."""
    return -jnp.sum(two_hot(target, num_bins, vmin, vmax) * jax.nn.log_softmax(logits), axis=-1)


def sigmoid_bce(logit: jax.Array, target: jax.Array) -> jax.Array:
    """Binary cross-entropy (...,) of sigmoid(logit) against targets in [0, 1], stable for any logit.

    Written as softplus(logit) - logit * target so that the gradient is sigmoid(logit) - target
    everywhere. The max(x, 0) + log1p(exp(-|x|)) form has a zero gradient at exactly x = 0 in
    JAX, where a zero-initialised termination logit starts: on tasks without terminations it
    then never moved and every imagined step was discounted by p_term = 0.5.
    """
    return jax.nn.softplus(logit) - logit * target


def simnorm(x: jax.Array, group: int) -> jax.Array:
    """Simplicial normalisation: softmax over consecutive groups of `group` features.

    x: (..., L) with L divisible by `group`; returns (..., L), each group sums to one.
    """
    shape = x.shape
    x = x.reshape(*shape[:-1], shape[-1] // group, group)
    return jax.nn.softmax(x, axis=-1).reshape(shape)


def tanh_gaussian_sample(
    mean: jax.Array,
    log_std: jax.Array,
    *,
    key: jax.Array | None = None,
    eps: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sample a = tanh(mean + std * eps); return (a (..., A), log_prob (...,)).

    eps ~ N(0, 1) of mean's shape is drawn from `key`, or given (data-parallel updates draw it for
    the global batch and pass each device its rows). log_prob includes the tanh change of
    variables: log N(u) - sum log(1 - tanh(u)^2).
    """
    if eps is None:
        eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * eps
    gauss = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), numerically stable.
    correction = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(gauss - correction, axis=-1)

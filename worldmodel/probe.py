"""Observation-decoder probe: a small MLP fit after the fact to map latents z back to observations.

It is a *probe*, not part of the world model: the model is trained without any reconstruction
loss, and the probe is fit post hoc on (sg(encode(obs)), obs) pairs with the model frozen, only
to look at imagined latents in observation space (scripts/visualize.py). Its error therefore
mixes model error with probe error; `fit_probe` reports the held-out fit so the two can be told
apart. Pure JAX: the fit is one jitted `lax.scan` over optimisation steps.
Shapes: obs (N, D), z (N, L).
"""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodel.model import WorldModel
from worldmodel.networks import MLP


@flax.struct.dataclass
class Probe:
    """Fitted decoder. Targets are standardised: obs = mean + std * mlp(z)."""

    params: dict
    obs_mean: jax.Array  # (D,)
    obs_std: jax.Array  # (D,)
    hidden: tuple[int, ...] = flax.struct.field(pytree_node=False)


def _net(hidden: tuple[int, ...], obs_dim: int) -> nn.Module:
    return MLP(hidden, obs_dim)


def decode(probe: Probe, z: jax.Array) -> jax.Array:
    """z (..., L) -> decoded obs (..., D)."""
    out = _net(probe.hidden, probe.obs_mean.shape[-1]).apply({"params": probe.params}, z)
    return probe.obs_mean + probe.obs_std * out


@functools.partial(
    jax.jit, static_argnames=("model", "hidden", "steps", "batch_size", "lr", "n_val")
)
def _fit(model: WorldModel, params, obs, *, key, hidden, steps, batch_size, lr, n_val):
    """Jitted core: obs (N, D), the first `n_val` of a random permutation held out ->
    (Probe, per-step loss (steps,), held-out obs (n_val, D), their decoding (n_val, D)).
    `model` is static (a hashable frozen dataclass)."""
    split_key, init_key, batch_key = jax.random.split(key, 3)
    order = jax.random.permutation(split_key, obs.shape[0])
    val, fit = obs[order[:n_val]], obs[order[n_val:]]
    z = jax.lax.stop_gradient(model.encode(params, fit))  # (N - n_val, L); the model is frozen
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    target = (fit - mean) / std
    net = _net(hidden, obs.shape[-1])
    probe_params = net.init(init_key, z[:1])["params"]
    optim = optax.adam(lr)

    def loss_fn(p, zb, yb):
        return jnp.mean((net.apply({"params": p}, zb) - yb) ** 2)

    def step(carry, k):
        p, opt_state = carry
        idx = jax.random.randint(k, (batch_size,), 0, fit.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(p, z[idx], target[idx])
        updates, opt_state = optim.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    keys = jax.random.split(batch_key, steps)
    (probe_params, _), losses = jax.lax.scan(step, (probe_params, optim.init(probe_params)), keys)
    probe = Probe(probe_params, mean, std, hidden)
    return probe, losses, val, decode(probe, model.encode(params, val))


def fit_probe(
    model: WorldModel,
    params: dict,
    obs: np.ndarray,
    *,
    key: jax.Array,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: tuple[int, ...] = (256, 256),
    holdout: float = 0.1,
) -> tuple[Probe, dict]:
    """Fit a decoder probe on observations obs (N >= 2, D) with the world model `params` frozen.

    A random `holdout` fraction (at least one row) is kept out of the fit.
    Returns (probe, info) with info = {'loss': final train MSE (standardised units),
    'val_mse': held-out MSE (standardised), 'val_r2': held-out R² averaged over dims
    (1 = perfect; about 0 = no better than the mean), 'n_fit', 'n_val'}.
    """
    obs = np.asarray(obs, np.float32)
    if obs.ndim != 2 or obs.shape[1] != model.obs_dim or not np.all(np.isfinite(obs)):
        raise ValueError(f"obs must be finite (N, {model.obs_dim}), got {obs.shape}")
    if len(obs) < 2 or not 0.0 < holdout < 1.0:
        raise ValueError(
            f"need N >= 2 observations and 0 < holdout < 1, got {obs.shape}, {holdout}"
        )
    n_val = min(max(int(round(holdout * len(obs))), 1), len(obs) - 1)
    probe, losses, val, pred = _fit(
        model,
        params,
        jnp.asarray(obs),
        key=key,
        hidden=tuple(hidden),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        n_val=n_val,
    )
    val, pred, std = np.asarray(val), np.asarray(pred), np.asarray(probe.obs_std)
    var = val.var(0)
    r2 = 1.0 - ((pred - val) ** 2).mean(0) / np.where(var > 0, var, np.nan)
    info = {
        "loss": float(np.asarray(losses)[-10:].mean()),
        "val_mse": float((((pred - val) / std) ** 2).mean()),
        "val_r2": float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan"),
        "n_fit": len(obs) - n_val,
        "n_val": n_val,
    }
    return probe, info


@functools.partial(jax.jit, static_argnames=("model",))
def open_loop(
    model: WorldModel,
    params: dict,
    probe: Probe,
    obs: jax.Array,
    actions: jax.Array,
    epi_scale: jax.Array | None = None,
):
    """Open-loop imagination from real observations, decoded by the probe.

    obs (S, H+1, D) real observations (only obs[:, 0] drives the imagination; the rest is
    decoded through encode -> probe as the probe's own error floor), actions (S, H, A) the
    actions actually taken. z_0 = encode(obs_0), z_{h+1} = next_mean(z_h, a_h).
    Returns (imagined obs (S, H+1, D) = decode(z_h), scores (S, H), reconstructed obs
    (S, H+1, D) = decode(encode(obs_h))). scores = mean over dims of Var_k(heads) / epi_scale at
    (z_h, a_h): `model.disagreement` when epi_scale is None, the abstention gate's normalised
    epistemic score (worldmodel.uncertainty.epistemic) with a calibration's epi_scale (L,).
    """
    scale = jnp.ones((model.latent_dim,)) if epi_scale is None else jnp.asarray(epi_scale)

    def one(o, a):
        def step(z, a_h):
            heads = model.next_all(params, z, a_h)  # (K, L)
            return heads.mean(0), (z, (heads.var(0) / scale).mean(-1))

        z_last, (zs, scores) = jax.lax.scan(step, model.encode(params, o[0]), a)
        zs = jnp.concatenate([zs, z_last[None]], axis=0)  # (H+1, L)
        return decode(probe, zs), scores, decode(probe, model.encode(params, o))

    return jax.vmap(one)(jnp.asarray(obs, jnp.float32), jnp.asarray(actions, jnp.float32))

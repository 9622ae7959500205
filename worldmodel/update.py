"""Train state and the jitted update step: one gradient step on the world model, one on the policy
prior, a Polyak step on the target critics.

`make_train(model, ...)` returns `(init, update)`; `update(state, batch, *, key) -> (state, metrics)`
with batch fields batch-major: obs (B, H+1, D), action (B, H, A), reward (B, H), terminated (B, H).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from worldmodel.losses import (
    LossConfig,
    policy_loss,
    to_time_major,
    world_model_loss,
    world_model_noise,
)
from worldmodel.model import WorldModel
from worldmodel.sharding import data_parallel


@flax.struct.dataclass
class TrainState:
    """Everything the update changes. `q_scale` is the running Q spread for the policy loss."""

    params: dict
    target_q: dict
    opt_state: optax.OptState
    pi_opt_state: optax.OptState
    q_scale: jax.Array
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The `optim` config slice."""

    lr: float = 1e-3
    enc_lr_scale: float = 0.3
    grad_clip: float = 20.0
    tau: float = 0.05
    scale_tau: float = 0.01


def _model_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Adam (encoder at lr * enc_lr_scale), gradients clipped to `grad_clip` in global norm over
    the world model and, apart, over the observation heads: those are a probe on their own
    params, and their NLL gradients are ~100x the model's (measured on HalfCheetah: 5-15 vs
    0.1-0.2), so one shared clip would let the probe shrink the model's steps."""
    probe = lambda p: {k: k == "obs_heads" for k in p}  # noqa: E731
    model = lambda p: {k: k != "obs_heads" for k in p}  # noqa: E731
    labels = lambda p: {k: ("enc" if k == "encoder" else "main") for k in p}  # noqa: E731
    return optax.chain(
        optax.masked(optax.clip_by_global_norm(cfg.grad_clip), model),
        optax.masked(optax.clip_by_global_norm(cfg.grad_clip), probe),
        optax.multi_transform(
            {"enc": optax.adam(cfg.lr * cfg.enc_lr_scale), "main": optax.adam(cfg.lr)}, labels
        ),
    )


def _pi_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.lr, eps=1e-5))


def split_params(params: dict) -> tuple[dict, dict]:
    """(world-model params without 'pi', policy params)."""
    return {k: v for k, v in params.items() if k != "pi"}, params["pi"]


def make_train(
    model: WorldModel, loss_cfg: LossConfig, optim_cfg: OptimConfig, *, mesh: Mesh | None = None
) -> tuple[Callable, Callable]:
    """Returns `init(*, key) -> TrainState` and jitted `update(state, batch, *, key)`.

    With a `mesh` whose "data" axis has n > 1 devices, both gradient steps run data-parallel
    (`sharding.data_parallel`): each device computes its rows' gradients and one packed
    all-reduce per step averages them (2 per update, not one per parameter leaf). The randomness
    is drawn for the global batch first, so the result equals one device's to float tolerance.
    """
    model_opt, pi_opt = _model_optimizer(optim_cfg), _pi_optimizer(optim_cfg)
    n = 1 if mesh is None else mesh.shape["data"]

    def init(*, key: jax.Array) -> TrainState:
        params = model.init(key=key)
        wm, pi = split_params(params)
        return TrainState(
            params=params,
            target_q=jax.tree.map(jnp.copy, params["q"]),
            opt_state=model_opt.init(wm),
            pi_opt_state=pi_opt.init(pi),
            q_scale=jnp.ones((), jnp.float32),
            step=jnp.zeros((), jnp.int32),
        )

    def wm_grads(wm, pi, target_q, batch, noise):
        """-> (grads, scalar metrics incl. loss, zs (H+1, b, L), zs_mask (H+1, b)) for b rows."""
        (loss, aux), grads = jax.value_and_grad(
            lambda p: world_model_loss(
                model, loss_cfg, {**p, "pi": pi}, target_q, batch, noise=noise
            ),
            has_aux=True,
        )(wm)
        scalars = {k: v for k, v in aux.items() if k not in ("zs", "zs_mask")}
        return grads, {**scalars, "loss": loss}, aux["zs"], aux["zs_mask"]

    def pi_grads(pi, params, zs, zs_mask, q_scale, eps, actions):
        """-> (grads, scalar metrics, Q of the first latent per row (b,))."""
        (pi_loss, aux), grads = jax.value_and_grad(
            lambda p: policy_loss(
                model, loss_cfg, p, params, zs, zs_mask, q_scale, eps=eps, actions=actions
            ),
            has_aux=True,
        )(pi)
        scalars = {"pi_loss": pi_loss, "pi_entropy": aux["entropy"], "q_mean": aux["q"].mean()}
        if "bc" in aux:
            scalars["pi_bc"] = aux["bc"]
        return grads, scalars, aux["q"][0]

    if n > 1:  # rows (axis 1 of time-major arrays, axis 0 of `head`) split on "data"
        rows, rows0 = P(None, "data"), P("data")
        wm_grads = data_parallel(
            wm_grads, mesh, in_specs=(P(), P(), P(), rows, {"head": rows0, "eps": rows}),
            out_specs=(P(), P(), rows, rows), gather=(),
        )  # fmt: skip
        pi_grads = data_parallel(
            pi_grads, mesh, in_specs=(P(), P(), rows, rows, P(), rows, rows),
            out_specs=(P(), P(), P()), gather=(2,),
        )  # fmt: skip

    def update(state: TrainState, batch: dict, *, key: jax.Array):
        key_td, key_pi = jax.random.split(key)
        batch = to_time_major(batch)
        H, B = batch["action"].shape[:2]
        wm, pi = split_params(state.params)

        grads, metrics, zs, zs_mask = wm_grads(
            wm, pi, state.target_q, batch, world_model_noise(model, key_td, H, B)
        )
        updates, opt_state = model_opt.update(grads, state.opt_state, wm)
        wm = optax.apply_updates(wm, updates)
        params = {**wm, "pi": pi}

        eps = jax.random.normal(key_pi, (H + 1, B, model.act_dim), jnp.float32)
        g_pi, pi_metrics, q0 = pi_grads(
            pi, params, zs, zs_mask, state.q_scale, eps, batch["action"]
        )
        pi_updates, pi_opt_state = pi_opt.update(g_pi, state.pi_opt_state, pi)
        params = {**params, "pi": optax.apply_updates(pi, pi_updates)}

        spread = jnp.percentile(q0, 95) - jnp.percentile(q0, 5)
        q_scale = jnp.maximum(
            (1 - optim_cfg.scale_tau) * state.q_scale + optim_cfg.scale_tau * spread, 1.0
        )
        target_q = optax.incremental_update(params["q"], state.target_q, optim_cfg.tau)
        metrics = {**metrics, **pi_metrics, "q_scale": q_scale, "grad_norm": optax.tree.norm(grads)}
        new_state = TrainState(
            params=params,
            target_q=target_q,
            opt_state=opt_state,
            pi_opt_state=pi_opt_state,
            q_scale=q_scale,
            step=state.step + 1,
        )
        return new_state, metrics

    return jax.jit(init), jax.jit(update, donate_argnums=0)

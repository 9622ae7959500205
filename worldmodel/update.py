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

from worldmodel.losses import LossConfig, policy_loss, to_time_major, world_model_loss
from worldmodel.model import WorldModel


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
    labels = lambda p: {k: ("enc" if k == "encoder" else "main") for k in p}  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
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
    model: WorldModel, loss_cfg: LossConfig, optim_cfg: OptimConfig
) -> tuple[Callable, Callable]:
    """Returns `init(*, key) -> TrainState` and jitted `update(state, batch, *, key)`."""
    model_opt, pi_opt = _model_optimizer(optim_cfg), _pi_optimizer(optim_cfg)

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

    def update(state: TrainState, batch: dict, *, key: jax.Array):
        key_td, key_pi = jax.random.split(key)
        batch = to_time_major(batch)
        wm, pi = split_params(state.params)

        def wm_loss(wm_params):
            return world_model_loss(
                model, loss_cfg, {**wm_params, "pi": pi}, state.target_q, batch, key=key_td
            )

        (loss, aux), grads = jax.value_and_grad(wm_loss, has_aux=True)(wm)
        updates, opt_state = model_opt.update(grads, state.opt_state, wm)
        wm = optax.apply_updates(wm, updates)
        params = {**wm, "pi": pi}

        (pi_loss, pi_aux), pi_grads = jax.value_and_grad(
            lambda p: policy_loss(
                model, loss_cfg, p, params, aux["zs"], aux["zs_mask"], state.q_scale, key=key_pi
            ),
            has_aux=True,
        )(pi)
        pi_updates, pi_opt_state = pi_opt.update(pi_grads, state.pi_opt_state, pi)
        params = {**params, "pi": optax.apply_updates(pi, pi_updates)}

        q0 = pi_aux["q"][0]
        spread = jnp.percentile(q0, 95) - jnp.percentile(q0, 5)
        q_scale = jnp.maximum(
            (1 - optim_cfg.scale_tau) * state.q_scale + optim_cfg.scale_tau * spread, 1.0
        )
        target_q = optax.incremental_update(params["q"], state.target_q, optim_cfg.tau)
        metrics = {k: v for k, v in aux.items() if k not in ("zs", "zs_mask")}
        metrics.update(
            loss=loss,
            pi_loss=pi_loss,
            pi_entropy=pi_aux["entropy"],
            q_mean=pi_aux["q"].mean(),
            q_scale=q_scale,
            grad_norm=optax.tree.norm(grads),
        )
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

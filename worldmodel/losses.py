"""Training objectives: multi-step latent consistency + reward + continue + TD value (TD-MPC2 style),
and the policy-prior objective. Pure functions of params and a batch.

Batch (time-major after `to_time_major`): obs (H+1, B, D), action (H, B, A), reward (H, B),
terminated (H, B). H = training horizon, K = dynamics heads, Q = critics.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from worldmodel import ops
from worldmodel.model import WorldModel

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Coefficients of the objective (the `loss` config slice)."""

    discount: float = 0.99
    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    continue_coef: float = 1.0
    entropy_coef: float = 1e-4


def to_time_major(batch: dict) -> dict:
    """(B, T, ...) -> (T, B, ...) for every field."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)


def rollout_heads(model: WorldModel, params: dict, z0: jax.Array, actions: jax.Array) -> jax.Array:
    """Open-loop rollout of every head from the same start.

    z0 (B, L), actions (H, B, A) -> latents (H, K, B, L): head k always feeds on its own prediction.
    """
    K = model.num_heads

    def step(zk, a):
        zk = model.next_split(params, zk, jnp.broadcast_to(a, (K, *a.shape)))
        return zk, zk

    _, zs = jax.lax.scan(step, jnp.broadcast_to(z0, (K, *z0.shape)), actions, unroll=True)
    return zs


def world_model_loss(
    model: WorldModel, cfg: LossConfig, params: dict, target_q: dict, batch: dict, *, key: jax.Array
):
    """Total model loss (scalar) and aux dict. `params['pi']` is used only for TD targets (no grad).

    Per step t the weights are rho**t; each term is averaged over the horizon as in TD-MPC2.
    """
    obs, act, rew, term = batch["obs"], batch["action"], batch["reward"], batch["terminated"]
    H = act.shape[0]
    w = cfg.rho ** jnp.arange(H, dtype=jnp.float32)  # (H,)

    next_z = sg(model.encode(params, obs[1:]))  # (H, B, L) consistency + TD targets
    z0 = model.encode(params, obs[0])  # (B, L)
    zk = rollout_heads(model, params, z0, act)  # (H, K, B, L)
    consistency = jnp.sum(w * jnp.mean((zk - next_z[:, None]) ** 2, axis=(1, 2, 3))) / H

    zs = jnp.concatenate([z0[None], zk.mean(axis=1)], axis=0)  # (H+1, B, L) mean-latent rollout
    r_logits, c_logit = model.reward_logits(params, zs[:-1], act)  # (H, B, bins), (H, B)
    r_ce = ops.soft_ce(r_logits, rew, model.num_bins, model.vmin, model.vmax)
    reward_loss = jnp.sum(w * jnp.mean(r_ce, axis=1)) / H
    cont_ce = ops.sigmoid_bce(c_logit, term)
    continue_loss = jnp.sum(w * jnp.mean(cont_ce, axis=1)) / H

    next_a, _, _ = model.pi(sg(params), next_z, key=key)
    q_next = model.q_values(target_q, next_z, next_a).min(axis=0)  # (H, B) pessimistic target
    td_target = sg(rew + cfg.discount * (1.0 - term) * q_next)
    q_logits = model.q_logits(params["q"], zs[:-1], act)  # (Q, H, B, bins)
    q_ce = ops.soft_ce(q_logits, td_target[None], model.num_bins, model.vmin, model.vmax)
    value_loss = jnp.sum(w * jnp.mean(q_ce, axis=(0, 2))) / H

    total = (
        cfg.consistency_coef * consistency
        + cfg.reward_coef * reward_loss
        + cfg.value_coef * value_loss
        + cfg.continue_coef * continue_loss
    )
    aux = {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "value_loss": value_loss,
        "continue_loss": continue_loss,
        "td_target": td_target.mean(),
        "disagreement": zk.var(axis=1).mean(),
        "zs": sg(zs),
    }
    return total, aux


def policy_loss(
    model: WorldModel,
    cfg: LossConfig,
    pi_params: dict,
    params: dict,
    zs: jax.Array,
    scale: jax.Array,
    *,
    key: jax.Array,
):
    """Policy-prior loss on detached latents zs (T, B, L): maximise Q/scale plus a small entropy bonus.

    `scale` is the running spread of Q (5th-95th percentile), which keeps the objective task-scale free.
    Returns (loss, aux) with aux['q'] the raw Q values (T, B) used to update the scale.
    """
    a, log_prob, _ = model.pi({**params, "pi": pi_params}, zs, key=key)
    q = model.q_values(sg(params["q"]), zs, a).mean(axis=0)  # (T, B)
    T = zs.shape[0]
    w = cfg.rho ** jnp.arange(T, dtype=jnp.float32)
    per_t = jnp.mean(cfg.entropy_coef * log_prob - q / scale, axis=1)
    loss = jnp.sum(w * per_t) / T
    return loss, {"q": q, "entropy": -log_prob.mean()}

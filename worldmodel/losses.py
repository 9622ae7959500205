"""Training objectives: multi-step latent consistency + reward + continue + TD value (TD-MPC2 style),
and the policy-prior objective. Pure functions of params and a batch.

Batch (time-major after `to_time_major`): obs (H+1, B, D), action (H, B, A), reward (H, B),
terminated (H, B). H = training horizon, K = dynamics heads, Q = critics.
"""

from __future__ import annotations

import dataclasses
import functools

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
    encoded_continue_coef: float = 0.0
    entropy_coef: float = 1e-4
    bc_coef: float = 0.0
    td_lambda: float = 0.0
    obs_coef: float = 1.0


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


def lambda_returns(
    rew: jax.Array, term: jax.Array, mask: jax.Array, q_next: jax.Array, discount: float, lam: float
) -> jax.Array:
    """TD(lambda) targets (H, B) over a replay window, all inputs (H, B).

    y_t = r_t + gamma (1 - term_t) [(1 - lam) Q_t + lam y_{t+1}], where Q_t is the target value
    of the next state of step t, and y_{t+1} is replaced by Q_t where step t+1 is outside the
    episode (mask 0) or past the window. lam = 0 is one-step TD (TD-MPC2); larger lam carries
    real rewards further per update, so values propagate faster early in training.
    """
    H = rew.shape[0]
    y = rew[H - 1] + discount * (1.0 - term[H - 1]) * q_next[H - 1]
    out = [y]
    for t in range(H - 2, -1, -1):
        ahead = jnp.where(mask[t + 1] > 0, (1.0 - lam) * q_next[t] + lam * y, q_next[t])
        y = rew[t] + discount * (1.0 - term[t]) * ahead
        out.append(y)
    return jnp.stack(out[::-1])


def _termination_error(model, params, obs, act, term, zs, logit=None) -> jax.Array:
    """Per-step termination loss (H, B) along latents zs (H+1, B, L): the BCE of the step's
    termination logit (given as `logit` (H, B) when already computed), or with
    termination_from='bounds' the squared error of the rule's obs dims read from z_t+1 against
    the real next observation's (summed over the dims)."""
    if model.termination_from == "bounds":
        err = model.bounded_obs(params, zs[1:]) - model.rule_dims(obs[1:])
        return jnp.sum(err**2, axis=-1)
    if logit is None:
        logit = model.termination_logit(params, zs[:-1], act, zs[1:])
    return ops.sigmoid_bce(logit, term)


def world_model_noise(model: WorldModel, key: jax.Array, H: int, B: int) -> dict:
    """The randomness of `world_model_loss` for a batch of B sequences of horizon H: which head's
    rollout each sequence trains the reward/value heads on, head (B,) int, and the policy noise of
    the TD targets, eps (H, B, A). Batch-major in B so a data-parallel update can split it."""
    key_head, key_td = jax.random.split(key)
    return {
        "head": jax.random.randint(key_head, (B,), 0, model.num_heads),
        "eps": jax.random.normal(key_td, (H, B, model.act_dim), jnp.float32),
    }


def world_model_loss(
    model: WorldModel,
    cfg: LossConfig,
    params: dict,
    target_q: dict,
    batch: dict,
    *,
    key: jax.Array | None = None,
    noise: dict | None = None,
):
    """Total model loss (scalar) and aux dict. `params['pi']` is used only for TD targets (no grad).

    Per step t the weights are rho**t * mask[t] (mask: the step lies inside the episode; absent
    means all ones); each term is averaged over the horizon as in TD-MPC2. Reward, termination and
    value heads see, per sequence, the rollout of one randomly drawn head: the same kind of latent
    the planner imagines with (a single head's prediction, not an average of heads); the
    termination head (model.termination_from='next') sees that rollout's next latents.
    """
    obs, act, rew, term = batch["obs"], batch["action"], batch["reward"], batch["terminated"]
    H, B = act.shape[:2]
    mask = batch.get("mask", jnp.ones((H, B), jnp.float32))
    w = (cfg.rho ** jnp.arange(H, dtype=jnp.float32))[:, None] * mask  # (H, B)
    noise = world_model_noise(model, key, H, B) if noise is None else noise

    z_enc = model.encode(params, obs)  # (H+1, B, L) every real observation's latent
    z0, next_z = z_enc[0], sg(z_enc[1:])  # start (B, L); consistency + TD targets (H, B, L)
    zk = rollout_heads(model, params, z0, act)  # (H, K, B, L)
    err = jnp.mean((zk - next_z[:, None]) ** 2, axis=(1, 3))  # (H, B)
    consistency = jnp.sum(w * err) / (H * B)

    head = noise["head"]
    z_head = jnp.take_along_axis(zk, head[None, None, :, None], axis=1)[:, 0]  # (H, B, L)
    zs = jnp.concatenate([z0[None], z_head], axis=0)  # (H+1, B, L)
    # (H, B, bins), (H, B): one pass of the reward MLP gives both with termination_from='action'
    r_logits, t_logits = model.reward_and_termination_logits(params, zs[:-1], act, zs[1:])
    r_ce = ops.soft_ce(r_logits, rew, model.num_bins, model.vmin, model.vmax)
    reward_loss = jnp.sum(w * r_ce) / (H * B)
    # The termination head on the imagined latents (continue_loss) and on the encoded ones of
    # every step, no rho decay, gradient into the encoder (encoded_continue_loss): the second
    # makes the encoder keep what tells a termination (BENCHMARKS, Hopper).
    term_err = functools.partial(_termination_error, model, params, obs, act, term)
    continue_loss = jnp.sum(w * term_err(zs, t_logits)) / (H * B)
    encoded = {}  # only computed when it is trained: it would cost every update a head pass
    if cfg.encoded_continue_coef:
        encoded["encoded_continue_loss"] = jnp.sum(mask * term_err(z_enc)) / (H * B)

    next_a, _, _ = model.pi(sg(params), next_z, eps=noise["eps"])
    q_next = model.q_values(target_q, next_z, next_a).min(axis=0)  # (H, B) pessimistic target
    td_target = sg(lambda_returns(rew, term, mask, q_next, cfg.discount, cfg.td_lambda))
    q_logits = model.q_logits(params["q"], zs[:-1], act)  # (Q, H, B, bins)
    q_ce = ops.soft_ce(q_logits, td_target[None], model.num_bins, model.vmin, model.vmax)
    value_loss = jnp.sum(w * q_ce.mean(axis=0)) / (H * B)

    # Observation heads (own params, raw obs in): Gaussian NLL of every step's obs change.
    o_mean, o_var = model.obs_moments(params, obs[:-1], act)  # (K, H, B, D)
    o_err = (model.obs_target(obs[:-1], obs[1:])[None] - o_mean) ** 2
    o_nll = 0.5 * (o_err / o_var + jnp.log(o_var)).mean(axis=(0, 3))  # (H, B)
    obs_loss = jnp.sum(mask * o_nll) / (H * B)

    total = (
        cfg.consistency_coef * consistency
        + cfg.reward_coef * reward_loss
        + cfg.value_coef * value_loss
        + cfg.continue_coef * continue_loss
        + cfg.encoded_continue_coef * encoded.get("encoded_continue_loss", 0.0)
        + cfg.obs_coef * obs_loss
    )
    valid = jnp.concatenate([jnp.ones((1, B)), mask], axis=0)  # (H+1, B) latents inside episode
    aux = {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "value_loss": value_loss,
        "continue_loss": continue_loss,
        **encoded,
        "obs_loss": obs_loss,
        "td_target": jnp.sum(td_target * mask) / jnp.sum(mask),
        "disagreement": zk.var(axis=1).mean(),
        "zs": sg(zs),
        "zs_mask": valid,
    }
    return total, aux


def policy_loss(
    model: WorldModel,
    cfg: LossConfig,
    pi_params: dict,
    params: dict,
    zs: jax.Array,
    mask: jax.Array,
    scale: jax.Array,
    *,
    key: jax.Array | None = None,
    eps: jax.Array | None = None,
    actions: jax.Array | None = None,
):
    """Policy-prior loss on detached latents zs (T, B, L) with mask (T, B): maximise Q/scale plus
    a small entropy bonus, and (cfg.bc_coef > 0) pull the prior's mean action at zs[:-1] toward
    the replay's actions (T-1, B, A), the planner's choices.

    `scale` is the running spread of Q (5th-95th percentile), which keeps the objective
    task-scale free. The policy's sample noise comes from `key` or is given, eps (T, B, A).
    The behaviour-cloning term, bc_coef * rho^t * mean_A (mean action - replay action)^2 where
    step t lies in the episode (mask[t + 1]), distils the search into the prior (as MuZero trains
    its policy toward its search) and keeps the prior on actions the critics were trained on;
    without it a HalfCheetah prior that the critics rated as highly as the planner's actions
    returned -85 where the planner returned 2071 (BENCHMARKS.md).
    Returns (loss, aux) with aux['q'] the raw Q values (T, B).
    """
    a, log_prob, a_mean = model.pi({**params, "pi": pi_params}, zs, key=key, eps=eps)
    q = model.q_values(sg(params["q"]), zs, a).mean(axis=0)  # (T, B)
    T, B = zs.shape[:2]
    decay = (cfg.rho ** jnp.arange(T, dtype=jnp.float32))[:, None]
    w = decay * mask
    loss = jnp.sum(w * (cfg.entropy_coef * log_prob - q / scale)) / (T * B)
    aux = {"q": q, "entropy": -log_prob.mean()}
    if cfg.bc_coef:
        if actions is None:
            raise ValueError("policy_loss with bc_coef > 0 needs the replay's actions")
        bc = jnp.mean((a_mean[:-1] - actions) ** 2, axis=-1)  # (T-1, B)
        aux["bc"] = jnp.sum(decay[:-1] * mask[1:] * bc) / (T * B)
        loss = loss + cfg.bc_coef * aux["bc"]
    return loss, aux

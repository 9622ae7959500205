"""MPPI planner over imagined latent rollouts, with a policy prior and a terminal value (TD-MPC2 style).

Pure and jitted: `plan(params, z, warm, first, *, key, explore)` returns the action and the next warm
start as data. Shapes: z (L,), warm (H, A); N candidates = `num_samples`, P of them from the prior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from worldmodel import ops
from worldmodel.errors import ConfigError
from worldmodel.model import WorldModel


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """The `planner` config slice."""

    horizon: int = 3
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    temperature: float = 0.5
    min_std: float = 0.05
    max_std: float = 2.0
    ensemble: str = (
        "random"  # 'random': one head per iteration; 'split': row blocks dealt to heads; 'mean'
    )
    uncertainty_coef: float = (
        0.0  # beta: + curiosity bonus, - pessimism (x normalised disagreement)
    )
    greedy: str = (
        "sample"  # action without exploration: 'sample' an elite by weight | 'best' elite | 'mean'
    )
    value: str = "mean"  # terminal value from the critics: 'mean' | 'min' (pessimistic)
    center: str = "warm"  # first sampling mean: 'warm' (last plan) | 'prior' (its mean rollout)


def make_latent_step(model: WorldModel, ensemble: str) -> Callable:
    """step(params, z (N, L), a (N, A), head) -> next z (N, L) as the planner imagines it.

    'random' (default): every row steps with dynamics head `head` (drawn per MPPI iteration by the
    caller): candidates within an iteration are compared under one belief, iterations see
    different heads, and a step costs one head. 'split': row blocks are dealt to the K heads, as
    cheap, but candidates are then judged by different heads and the top ranks go to plans dealt
    the most optimistic head (winner's curse: a solved InvertedPendulum agent scored 76 under
    'split', 1000 under 'random' and 'mean'; BENCHMARKS.md). 'mean': the heads' average (K times
    the cost).
    """
    K = model.num_heads
    if ensemble not in ("random", "split", "mean"):
        raise ConfigError(f"planner.ensemble must be 'random', 'split' or 'mean', got {ensemble!r}")

    def step(params, z, a, head):
        if ensemble == "random":
            return model.next_head(params, z, a, head)
        if ensemble == "mean":
            return model.next_mean(params, z, a)
        N = z.shape[0]
        pad = -N % K
        zp, ap = jnp.pad(z, ((0, pad), (0, 0))), jnp.pad(a, ((0, pad), (0, 0)))
        zk = model.next_split(
            params, zp.reshape(K, -1, z.shape[-1]), ap.reshape(K, -1, a.shape[-1])
        )
        return zk.reshape(N + pad, -1)[:N]

    return step


def make_value_fn(
    model: WorldModel, cfg: PlannerConfig, discount: float, *, parts: bool = False,
    mean_terminal: bool = False,
) -> Callable:  # fmt: skip
    """value(params, z (N, L), actions (N, H, A), *, key, epi_scale, head) -> (N,) imagined return.

    G = sum_t gamma^t alive_t (r_t + beta u_t) + gamma^H alive_H Q(z_H, pi(z_H)), Q the critics'
    mean or (planner.value = 'min') their minimum, alive_t = prod_{s<t} (1 - p_term_s) with
    p_term_s that of the step z_s -> z_s+1, u_t = mean_d Var_k[f_k(z_t, a_t)_d] / epi_scale_d the
    normalised disagreement (computed only when beta = planner.uncertainty_coef != 0: it costs all
    K heads per step). Latents step with `make_latent_step(model, cfg.ensemble)` and dynamics head
    `head` (default: one drawn from `key`). pi(z_H) is a sample, or its mean (`mean_terminal`).
    `parts=True` returns the two terms apart, (reward sum (N,), terminal term (N,)), as
    scripts.plan_check scores them.
    """
    step_latent = make_latent_step(model, cfg.ensemble)
    beta = cfg.uncertainty_coef
    if cfg.value not in ("mean", "min"):
        raise ConfigError(f"planner.value must be 'mean' or 'min', got {cfg.value!r}")
    reduce_q = jnp.min if cfg.value == "min" else jnp.mean

    def value(params, z, actions, *, key, epi_scale=None, head=None):
        key_head, key = jax.random.split(key)
        if head is None:
            head = jax.random.randint(key_head, (), 0, model.num_heads)

        def body(carry, a):
            z, ret, disc, alive = carry
            z_next = step_latent(params, z, a, head)
            r_logits, t_logit = model.reward_and_termination_logits(params, z, a, z_next)
            r = ops.two_hot_inv(r_logits, model.vmin, model.vmax)
            if beta:
                scale = 1.0 if epi_scale is None else epi_scale
                r = r + beta * (model.next_all(params, z, a).var(axis=0) / scale).mean(axis=-1)
            p_term = jax.nn.sigmoid(t_logit)
            z = z_next
            ret = ret + disc * alive * r
            alive = alive * (1.0 - p_term)
            return (z, ret, disc * discount, alive), None

        N = z.shape[0]
        init = (z, jnp.zeros(N), jnp.ones(()), jnp.ones(N))
        (z, ret, disc, alive), _ = jax.lax.scan(body, init, jnp.swapaxes(actions, 0, 1))
        a_sample, _, a_mean = model.pi(params, z, key=key)
        q = reduce_q(model.q_values(params["q"], z, a_mean if mean_terminal else a_sample), axis=0)
        return (ret, disc * alive * q) if parts else ret + disc * alive * q

    return value


def make_prior_rollout(model: WorldModel, cfg: PlannerConfig) -> Callable:
    """rollout(params, z (L,), key, n, *, sample=True) -> (n, H, A): n action sequences from
    rolling the policy prior in imagination (one head drawn from `key`, latents stepped as the
    planner steps them): sampled actions, or (sample=False) its mean actions."""
    step_latent = make_latent_step(model, cfg.ensemble)

    def rollout(params, z, key, n, *, sample=True):
        head = jax.random.randint(jax.random.fold_in(key, 1), (), 0, model.num_heads)

        def body(zs, k):
            a, _, a_mean = model.pi(params, zs, key=k)
            a = a if sample else a_mean
            return step_latent(params, zs, a, head), a

        _, acts = jax.lax.scan(
            body, jnp.broadcast_to(z, (n, z.shape[-1])), jax.random.split(key, cfg.horizon)
        )
        return jnp.swapaxes(acts, 0, 1)

    return rollout


def make_planner(model: WorldModel, cfg: PlannerConfig, *, discount: float) -> Callable:
    """plan(params, z (L,), warm (H, A), first (), *, key, explore, epi_scale=None) -> (action (A,),
    warm', info). epi_scale (L,) normalises the disagreement bonus (see `make_value_fn`)."""
    H, N, P, E, A = cfg.horizon, cfg.num_samples, cfg.num_pi_trajs, cfg.num_elites, model.act_dim
    if not 0 <= P < N or not 0 < E <= N:
        raise ConfigError(
            f"planner needs 0 <= num_pi_trajs ({P}) < num_samples ({N}) and "
            f"0 < num_elites ({E}) <= num_samples; change planner.num_elites or planner.num_samples"
        )
    if cfg.greedy not in ("sample", "best", "mean"):
        raise ConfigError(f"planner.greedy must be 'sample', 'best' or 'mean', got {cfg.greedy!r}")
    if cfg.center not in ("warm", "prior"):
        raise ConfigError(f"planner.center must be 'warm' or 'prior', got {cfg.center!r}")
    value_fn = make_value_fn(model, cfg, discount)
    prior_trajs = make_prior_rollout(model, cfg)

    def plan(params, z, warm, first, *, key, explore: bool, epi_scale=None):
        k_pi, k_iter, k_pick = jax.random.split(key, 3)
        pi_acts = prior_trajs(params, z, k_pi, P) if P else jnp.zeros((0, H, A))
        if cfg.center == "prior":  # a search around what the prior would do
            mean = prior_trajs(params, z, k_pi, 1, sample=False)[0]
        else:
            mean = jnp.where(first, 0.0, jnp.concatenate([warm[1:], jnp.zeros((1, A))]))
        zN = jnp.broadcast_to(z, (N, z.shape[-1]))
        score_fn = lambda acts, k: value_fn(params, zN, acts, key=k, epi_scale=epi_scale)  # noqa: E731
        mean, std, elite_a, weights, best = mppi(score_fn, mean, pi_acts, cfg, key=k_iter)
        action = select_action(mean, std, elite_a, weights, cfg.greedy, key=k_pick, explore=explore)
        action = jnp.clip(action, -1.0, 1.0)
        info = {"plan_value": best, "plan_std": std[0].mean()}
        return action, mean, info

    return plan


def select_action(mean, std, elite_a, weights, greedy: str, *, key, explore: bool) -> jax.Array:
    """The first action (A,) to execute from MPPI's result: mean/std (H, A), elites (E, H, A) with
    weights (E,).

    An elite is drawn by its weight (TD-MPC2); exploring adds noise of the final std. Without
    exploration, `greedy` picks: 'sample' that drawn elite, 'best' the top-weighted elite, 'mean'
    the elites' weighted mean -- which, where good plans are multimodal (balance a pole by
    pushing left or right), averages them into a plan that is neither.
    """
    if not explore and greedy == "best":
        return elite_a[jnp.argmax(weights)][0]
    if not explore and greedy == "mean":
        return mean[0]
    k_pick, k_noise = jax.random.split(key)
    chosen = elite_a[jax.random.categorical(k_pick, jnp.log(weights))][0]
    if explore:
        return chosen + std[0] * jax.random.normal(k_noise, chosen.shape)
    return chosen


def mppi(score_fn: Callable, mean: jax.Array, fixed: jax.Array, cfg: PlannerConfig, *, key):
    """Model-predictive path integral optimisation of action sequences in [-1, 1].

    score_fn(actions (N, H, A), key) -> (N,) higher is better. `mean` (H, A) is the initial
    sampling mean; `fixed` (P, H, A) candidates are scored in every iteration beside the N - P
    sampled ones. Returns (mean (H, A), std (H, A), elites (E, H, A), elite weights (E,), best score).
    """
    H, A = mean.shape
    N, E, P = cfg.num_samples, cfg.num_elites, fixed.shape[0]
    std = jnp.full((H, A), cfg.max_std)

    def iteration(carry, k):
        mean, std, _, _ = carry
        k_eps, k_val = jax.random.split(k)
        eps = jax.random.normal(k_eps, (N - P, H, A))
        acts = jnp.concatenate([fixed, jnp.clip(mean + std * eps, -1.0, 1.0)])
        vals = score_fn(acts, k_val)
        vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
        elite_v, idx = jax.lax.top_k(vals, E)
        elite_a = acts[idx]  # (E, H, A)
        weights = jax.nn.softmax(cfg.temperature * (elite_v - elite_v.max()))
        mean = jnp.einsum("e,eha->ha", weights, elite_a)
        var = jnp.einsum("e,eha->ha", weights, (elite_a - mean) ** 2)
        std = jnp.clip(jnp.sqrt(var), cfg.min_std, cfg.max_std)
        return (mean, std, elite_a, weights), elite_v.max()

    init = (mean, std, jnp.zeros((E, H, A)), jnp.full((E,), 1.0 / E))
    (mean, std, elite_a, weights), best = jax.lax.scan(
        iteration, init, jax.random.split(key, cfg.iterations)
    )
    return mean, std, elite_a, weights, best[-1]

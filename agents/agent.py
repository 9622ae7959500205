"""The agent: composes the world model, its training step and the planner into `act` and `update`.

Device side only (pure, jitted). The host loop calls
  act(state, carry, obs (N, D), first (N,), *, key, explore, plan) -> (action (N, A), carry, info)
  update(state, batch, *, key) -> (state, metrics)
N = number of parallel envs. `carry` holds each env's planner warm start.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp

from agents.planner import PlannerConfig, make_planner
from worldmodel.losses import LossConfig
from worldmodel.model import WorldModel, make_world_model
from worldmodel.update import OptimConfig, TrainState, make_train


@flax.struct.dataclass
class Carry:
    """Per-env state between `act` calls: the planner's warm-start mean (N, H, A)."""

    plan_mean: jax.Array


@dataclasses.dataclass(frozen=True)
class Agent:
    """Static bundle of pure functions; build with `make_agent`."""

    model: WorldModel
    planner_cfg: PlannerConfig
    init: Callable  # init(*, key) -> TrainState
    update: Callable  # update(state, batch, *, key) -> (state, metrics)
    _act: Callable

    def init_carry(self, num_envs: int) -> Carry:
        # Committed to a device like the carry `act` returns, so the second call does not retrace.
        zeros = jnp.zeros((num_envs, self.planner_cfg.horizon, self.model.act_dim))
        return Carry(plan_mean=jax.device_put(zeros, jax.devices()[0]))

    def act(
        self, state: TrainState, carry: Carry, obs, first, *, key, explore: bool, plan: bool = True
    ):
        """Choose actions in [-1, 1] for a batch of observations. See module docstring."""
        return self._act(state.params, carry, obs, first, key=key, explore=explore, plan=plan)


def make_agent(
    obs_dim: int, act_dim: int, *, model: dict, loss: dict, optim: dict, planner: dict
) -> Agent:
    """Factory: each argument is that config section as a dict."""
    wm = make_world_model(obs_dim, act_dim, **model)
    loss_cfg, optim_cfg, planner_cfg = (
        LossConfig(**loss),
        OptimConfig(**optim),
        PlannerConfig(**planner),
    )
    init, update = make_train(wm, loss_cfg, optim_cfg)
    plan_one = make_planner(wm, planner_cfg, discount=loss_cfg.discount)

    @functools.partial(jax.jit, static_argnames=("explore", "plan"))
    def act(params, carry: Carry, obs, first, *, key, explore: bool, plan: bool):
        obs = jnp.asarray(obs, jnp.float32)
        n = obs.shape[0]
        keys = jax.random.split(key, n)
        z = wm.encode(params, obs)  # (N, L)
        if plan:
            action, mean, info = jax.vmap(
                lambda z_i, w_i, f_i, k_i: plan_one(params, z_i, w_i, f_i, key=k_i, explore=explore)
            )(z, carry.plan_mean, jnp.asarray(first, bool), keys)
            carry = Carry(plan_mean=mean)
        else:
            sample, _, mean_action = wm.pi(params, z, key=key)
            action = sample if explore else mean_action
            info = {}
        info = {**info, "disagreement": wm.disagreement(params, z, action)}
        return action, carry, info

    return Agent(model=wm, planner_cfg=planner_cfg, init=init, update=update, _act=act)

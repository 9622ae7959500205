"""The agent: composes the world model, its training step and the planner into `act` and `update`.

Device side only (pure, jitted). The host loop calls
  act(state, carry, obs (N, D), first (N,), *, key, explore, plan, calib) -> (action (N, A), carry, info)
  update(state, batch, *, key) -> (state, metrics)
N = number of parallel envs. `carry` holds each env's planner warm start and the abstention
gate's memory. `info` always carries the decision's 'score', 'threshold' and 'abstained' flag
(see agents.abstain): an abstained decision's action is the fallback's, never the plan's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from agents.abstain import AbstainConfig, fallback_action, gate, init_prev
from agents.planner import PlannerConfig, make_planner
from worldmodel.losses import LossConfig
from worldmodel.model import WorldModel, make_world_model
from worldmodel.uncertainty import BIAS_KINDS, Calibration, init_calibration
from worldmodel.update import OptimConfig, TrainState, make_train


@flax.struct.dataclass
class Carry:
    """Per-env state between `act` calls: the planner's warm-start mean (N, H, A) and the gate's
    memory {'obs' (N, D), 'a' (N, A), 'win' (N, W), 'count' (N,)} (see agents.abstain.gate)."""

    plan_mean: jax.Array
    prev: dict


@dataclasses.dataclass(frozen=True)
class Agent:
    """Static bundle of pure functions; build with `make_agent`."""

    model: WorldModel
    planner_cfg: PlannerConfig
    abstain_cfg: AbstainConfig
    init: Callable  # init(*, key) -> TrainState
    update: Callable  # update(state, batch, *, key) -> (state, metrics)
    _act: Callable

    def init_carry(self, num_envs: int, *, like=None) -> Carry:
        """Fresh per-env carry, placed like `like` (a TrainState or params, e.g. replicated over a
        device mesh) so that `act`'s returned carry has the same placement and the next call
        does not retrace; default: committed to this process's first device."""
        m = self.model
        zeros = jnp.zeros((num_envs, self.planner_cfg.horizon, m.act_dim))
        cfg = self.abstain_cfg
        res_dim = m.obs_dim + m.latent_dim if cfg.score in BIAS_KINDS else 0
        prev = init_prev(num_envs, m.obs_dim, m.act_dim, cfg.window, res_dim)
        carry = Carry(plan_mean=zeros, prev=prev)
        sharding = getattr(jax.tree.leaves(like)[0], "sharding", None) if like is not None else None
        if isinstance(sharding, jax.sharding.NamedSharding):
            replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
            return jax.device_put(carry, replicated)
        return jax.device_put(carry, jax.local_devices()[0])

    def init_calibration(self) -> Calibration:
        """Uncalibrated (threshold inf: nothing abstains until `agents.calibration` has run)."""
        m = self.model
        calib = init_calibration(m.latent_dim, m.obs_dim, alpha=self.abstain_cfg.alpha)
        return jax.device_put(calib, jax.local_devices()[0])

    def act(
        self,
        state: TrainState,
        carry: Carry,
        obs,
        first,
        *,
        key,
        explore: bool,
        plan: bool = True,
        calib: Calibration | None = None,
    ):
        """Choose actions in [-1, 1] for a batch of observations. See module docstring."""
        calib = self.init_calibration() if calib is None else calib
        return self._act(
            state.params, calib, carry, obs, first, key=key, explore=explore, plan=plan
        )


def make_agent(
    obs_dim: int,
    act_dim: int,
    *,
    model: dict,
    loss: dict,
    optim: dict,
    planner: dict,
    abstain: dict | None = None,
    mesh: Mesh | None = None,
) -> Agent:
    """Factory: each argument is that config section as a dict (abstain: None = defaults).

    `mesh` (worldmodel.sharding.make_mesh): with "data" > 1 the update runs data-parallel."""
    wm = make_world_model(obs_dim, act_dim, **model)
    loss_cfg, optim_cfg, planner_cfg = (
        LossConfig(**loss),
        OptimConfig(**optim),
        PlannerConfig(**planner),
    )
    abstain_cfg = AbstainConfig(**(abstain or {}))
    init, update = make_train(wm, loss_cfg, optim_cfg, mesh=mesh)
    plan_one = make_planner(wm, planner_cfg, discount=loss_cfg.discount)

    @functools.partial(jax.jit, static_argnames=("explore", "plan"))
    def act(params, calib, carry: Carry, obs, first, *, key, explore: bool, plan: bool):
        obs = jnp.asarray(obs, jnp.float32)
        first = jnp.asarray(first, bool)
        n = obs.shape[0]
        keys = jax.random.split(key, n)
        z = wm.encode(params, obs)  # (N, L)
        mean = carry.plan_mean
        if plan:
            action, mean, info = jax.vmap(
                lambda z_i, w_i, f_i, k_i: plan_one(
                    params, z_i, w_i, f_i, key=k_i, explore=explore, epi_scale=calib.epi_scale
                )
            )(z, carry.plan_mean, first, keys)
        else:
            sample, _, mean_action = wm.pi(params, z, key=key)
            action = sample if explore else mean_action
            info = {}
        abstained, score, step_score, prev = gate(
            wm, params, calib, abstain_cfg, carry.prev, obs, action, first
        )
        action = jnp.where(abstained[:, None], fallback_action(wm, params, abstain_cfg, z), action)
        prev = {**prev, "a": action}  # the surprise of the next step is that of what was done
        info = {
            **info,
            "disagreement": wm.disagreement(params, z, action),
            "score": score,
            "step_score": step_score,
            "threshold": calib.threshold,
            "abstained": abstained,
            "stop": abstained & (abstain_cfg.fallback == "stop"),
        }
        return action, Carry(plan_mean=mean, prev=prev), info

    return Agent(
        model=wm,
        planner_cfg=planner_cfg,
        abstain_cfg=abstain_cfg,
        init=init,
        update=update,
        _act=act,
    )

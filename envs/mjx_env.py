"""Batched Gymnasium v5 MuJoCo tasks on MJX (MuJoCo's JAX simulator): N worlds, one jitted step.

Shapes: N worlds, D obs dims, A action dims. `make_mjx_task(id)` gives the pure per-world core
(`reset(key)`, `step(state, action)`); `make_batched(task, ...)` vmaps and jits it;
`MjxVectorEnv` is the host adapter with the SAME_STEP vector-env interface `envs.Driver` drives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from worldmodel.errors import EnvError

SUPPORTED_IDS = ("HalfCheetah-v5", "InvertedPendulum-v5")
_INSTALL_HINT = 'the mjx backend needs mujoco-mjx: pip install -e ".[mjx]"'


def _import_mjx():
    try:
        from mujoco import mjx
    except ImportError as err:
        raise EnvError(_INSTALL_HINT) from err
    return mjx


@struct.dataclass
class WorldState:
    """One world's state (a leading (N,) axis on every leaf when batched).

    data: mjx.Data (float32). obs (D,) float32: the current observation. t () int32: raw steps
    in this episode. key: PRNG key for the next reset's noise.
    """

    data: object
    obs: jax.Array
    t: jax.Array
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class MjxTask:
    """The pure per-world core of one Gymnasium v5 task (constants read from Gymnasium's env).

    reset(key) -> WorldState. physics(state, ctrl (A,) native units) -> (state, reward (),
    terminated () bool) advances one Gymnasium step (`frame_skip` MuJoCo steps, t += 1).
    `ctrl_low`, `ctrl_high` (A,): the native action bounds that [-1, 1] is rescaled to.
    """

    env_id: str
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    ctrl_low: np.ndarray
    ctrl_high: np.ndarray
    reset: Callable
    physics: Callable


def make_mjx_task(env_id: str) -> MjxTask:
    """Build the MJX twin of Gymnasium's `env_id` (HalfCheetah-v5 or InvertedPendulum-v5).

    Same XML (Gymnasium's compiled model, moved with mjx.put_model), frame_skip, observation,
    reward, termination and reset noise; unsupported ids and a missing mujoco-mjx raise a
    one-line EnvError.
    """
    if env_id not in SUPPORTED_IDS:
        raise EnvError(
            f"the mjx backend supports {', '.join(SUPPORTED_IDS)}, not {env_id!r} "
            "(use env.backend=gymnasium)"
        )
    mjx = _import_mjx()
    env = gym.make(env_id).unwrapped
    try:
        model, frame_skip, dt = env.model, int(env.frame_skip), float(env.dt)
        noise = float(env._reset_noise_scale)
        init_qpos = jnp.asarray(env.init_qpos, jnp.float32)
        init_qvel = jnp.asarray(env.init_qvel, jnp.float32)
        low, high = (
            np.asarray(b, np.float32) for b in (env.action_space.low, env.action_space.high)
        )
        cheetah = env_id.startswith("HalfCheetah")
        if cheetah:
            forward_w, ctrl_w = float(env._forward_reward_weight), float(env._ctrl_cost_weight)
            skip_x = bool(env._exclude_current_positions_from_observation)
        obs_dim = int(env.observation_space.shape[0])
    finally:
        env.close()
    mx = mjx.put_model(model)
    base = mjx.make_data(mx)  # mj_resetData: qpos = qpos0, everything else zero
    nq, nv = model.nq, model.nv

    def observe(data) -> jax.Array:
        qpos = data.qpos[1:] if cheetah and skip_x else data.qpos
        return jnp.concatenate([qpos, data.qvel]).astype(jnp.float32)

    def reset(key) -> WorldState:
        key, k_pos, k_vel = jax.random.split(key, 3)
        qpos = init_qpos + jax.random.uniform(k_pos, (nq,), minval=-noise, maxval=noise)
        if cheetah:  # HalfCheetah v5: qvel noise is normal; InvertedPendulum v5: uniform
            qvel = init_qvel + noise * jax.random.normal(k_vel, (nv,))
        else:
            qvel = init_qvel + jax.random.uniform(k_vel, (nv,), minval=-noise, maxval=noise)
        # Gymnasium's set_state also runs mj_forward; its outputs only feed rendering here, and
        # mjx.step starts with forward anyway, so the next step sees the same physics.
        data = base.replace(qpos=qpos, qvel=qvel)
        return WorldState(data=data, obs=observe(data), t=jnp.int32(0), key=key)

    def physics(state: WorldState, ctrl: jax.Array):
        data = state.data.replace(ctrl=ctrl)
        data = jax.lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(mx, d), data)
        obs = observe(data)
        if cheetah:
            x_velocity = (data.qpos[0] - state.data.qpos[0]) / dt
            reward = forward_w * x_velocity - ctrl_w * jnp.sum(jnp.square(ctrl))
            terminated = jnp.bool_(False)
        else:  # InvertedPendulum v5: alive bonus; ends when the pole tips past 0.2 rad
            terminated = ~jnp.all(jnp.isfinite(obs)) | (jnp.abs(obs[1]) > 0.2)
            reward = jnp.where(terminated, 0.0, 1.0)
        new = WorldState(data=data, obs=obs, t=state.t + 1, key=state.key)
        return new, reward.astype(jnp.float32), terminated

    max_steps = gym.spec(env_id).max_episode_steps
    return MjxTask(env_id, obs_dim, len(low), max_steps, low, high, reset, physics)


def _where(cond, a, b):
    """Per-leaf select between two pytrees of one world (cond is a scalar bool)."""
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def make_world_step(task: MjxTask, *, action_repeat: int = 1, max_episode_steps: int):
    """Pure per-world step with action repeat, time limit and SAME_STEP autoreset.

    step(state, action (A,) in [-1, 1]) -> (state, out) where out = dict(obs (D,) (the reset
    one where the episode ended), final_obs (D,), reward () summed over repeats, terminated,
    truncated () bool, env_steps () int32 raw steps taken (1..action_repeat)). Like the factory's
    ActionRepeat over TimeLimit: the repeat stops at episode end; truncation counts raw steps.
    """
    low, high = jnp.asarray(task.ctrl_low), jnp.asarray(task.ctrl_high)

    def step(state: WorldState, action: jax.Array):
        ctrl = low + (action + 1.0) * 0.5 * (high - low)  # gymnasium RescaleAction

        def sub(carry, _):
            s, ret, term, trunc, n = carry
            live = ~(term | trunc)
            new, r, te = task.physics(s, ctrl)
            s = _where(live, new, s)
            ret = ret + jnp.where(live, r, 0.0)
            term = term | (live & te)
            trunc = trunc | (live & (new.t >= max_episode_steps))
            return (s, ret, term, trunc, n + live.astype(jnp.int32)), None

        init = (state, jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False), jnp.int32(0))
        (s, ret, term, trunc, n), _ = jax.lax.scan(sub, init, None, length=action_repeat)
        done = term | trunc
        fresh = task.reset(s.key)
        out_state = _where(done, fresh, s)
        out = dict(
            obs=out_state.obs, final_obs=s.obs, reward=ret, terminated=term, truncated=trunc,
            env_steps=n,
        )  # fmt: skip
        return out_state, out

    return step


def make_batched(task: MjxTask, *, action_repeat: int = 1, max_episode_steps: int, chunk=None):
    """Jitted batched `(reset, step)` over N worlds.

    reset(keys (N,)) -> WorldState (N, ...); step(state, actions (N, A)) -> (state, out) with
    every `out` entry batched (N, ...). The state is donated. `chunk`: run worlds in groups of
    this size (lax.map over vmap) - on CPU, MJX under vmap hangs at N >= 1024 (machine facts).
    """
    step = make_world_step(task, action_repeat=action_repeat, max_episode_steps=max_episode_steps)
    vstep = jax.vmap(step)

    def batched_step(state, actions):
        n = actions.shape[0]
        if not chunk or n <= chunk:
            return vstep(state, actions)
        size = max(d for d in range(1, chunk + 1) if n % d == 0)  # equal chunks, no padding
        split = lambda x: x.reshape(n // size, size, *x.shape[1:])
        state, out = jax.lax.map(lambda a: vstep(*a), jax.tree.map(split, (state, actions)))
        return jax.tree.map(lambda x: x.reshape(n, *x.shape[2:]), (state, out))

    return jax.jit(jax.vmap(task.reset)), jax.jit(batched_step, donate_argnums=0)


class MjxVectorEnv(gym.vector.VectorEnv):
    """Host adapter: N MJX worlds behind the interface `envs.Driver` uses (host only).

    reset(seed) -> (obs (N, D) float32, {}); step(actions (N, A) in [-1, 1]) -> (obs, reward
    (N,) float32, terminated (N,), truncated (N,), info) with SAME_STEP autoreset: ended worlds
    return their reset obs and `info["final_obs"][i]` the true final one; `info["env_steps"]`
    (and `info["final_info"]["env_steps"]`) give raw steps per world. World i's reset noise is
    drawn from PRNG key fold_in(key(seed), i); later resets continue that world's stream.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}  # as envs.make_env's SyncVectorEnv

    def __init__(
        self,
        env_id: str,
        *,
        num_envs: int,
        seed: int,
        action_repeat: int = 1,
        max_episode_steps: int | None = None,
        chunk: int | None = None,
    ):
        self.task = make_mjx_task(env_id)
        limit = max_episode_steps or self.task.max_episode_steps
        self.num_envs = num_envs
        self.spec = dataclasses.replace(gym.spec(env_id), max_episode_steps=limit)
        D, A = self.task.obs_dim, self.task.act_dim
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (D,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        if chunk is None and jax.default_backend() == "cpu":
            chunk = 512  # the CPU hang at N >= 1024 (machine facts); GPUs take one vmap
        self._reset, self._step = make_batched(
            self.task, action_repeat=action_repeat, max_episode_steps=limit, chunk=chunk
        )
        self._seed = seed
        self.state: WorldState | None = None
        self.reset(seed=seed)
        self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every world; `seed` None continues each world's key stream."""
        if seed is not None:
            base = jax.random.key(seed)
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(self.num_envs))
        else:
            keys = self.state.key
        self.state = self._reset(keys)
        return np.asarray(self.state.obs), {}

    def step(self, actions):
        actions = np.asarray(actions, np.float32)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions shape {actions.shape} != {self.action_space.shape}")
        self.state, out = self._step(self.state, jnp.asarray(actions))
        out = jax.device_get(out)
        done = out["terminated"] | out["truncated"]
        every = np.ones(self.num_envs, dtype=bool)
        info = {
            "env_steps": out["env_steps"],
            "_env_steps": every,
            "final_obs": out["final_obs"],
            "_final_obs": done,
            "final_info": {"env_steps": out["env_steps"], "_env_steps": done},
            "_final_info": done,
        }
        return out["obs"], out["reward"], out["terminated"], out["truncated"], info

    def get_attr(self, name: str) -> tuple:
        return (getattr(self, name),) * self.num_envs

    def close_extras(self, **kwargs) -> None:
        self.state = None

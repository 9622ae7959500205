"""Build gymnasium vector envs with the project's conventions (host only).

Every env has a float32 Box observation of shape (D,) and a Box action in [-1, 1]^A.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RescaleAction, TransformObservation

from envs.shifts import ShiftSpec, ShiftWrapper, parse_shift
from worldmodel.errors import ConfigError, EnvError, first_line

BACKENDS = ("gymnasium", "mjx")


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times, summing rewards and stopping early at episode end.

    `info["env_steps"]` is the number of raw env steps this call took (1..repeat).
    """

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total, steps = 0.0, 0
        while steps < self.repeat:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
        info = {**info, "env_steps": steps}
        return obs, total, terminated, truncated, info


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _unknown_id_message(env_id: str) -> str:
    by_lower = {name.lower(): name for name in gym.registry}
    close = difflib.get_close_matches(env_id.lower(), list(by_lower), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_lower[c] for c in close)}?" if close else ""
    return f"unknown environment id {env_id!r}{hint}"


def _check_spaces(env_id: str, env: gym.Env) -> None:
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Box):
        raise EnvError(f"{env_id}: action space must be a continuous Box, got {act}")
    if not isinstance(obs, gym.spaces.Box):
        raise EnvError(f"{env_id}: observation space must be a Box, got {obs}")
    if len(obs.shape) != 1:
        raise EnvError(f"{env_id}: observations must be 1-D vectors, got shape {obs.shape}")
    if len(act.shape) != 1:
        raise EnvError(f"{env_id}: actions must be 1-D vectors, got shape {act.shape}")
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        raise EnvError(f"{env_id}: action bounds must be finite, got [{act.low}, {act.high}]")


def make_single_env(
    env_id: str,
    *,
    action_repeat: int = 1,
    max_episode_steps: int | None = None,
    shift: ShiftSpec | dict | None = None,
    shift_seed: int = 0,
) -> gym.Env:
    """One wrapped env: TimeLimit (raw steps) -> [ShiftWrapper] -> ActionRepeat -> [-1, 1]
    actions -> float32 obs.

    `shift` (a ShiftSpec or its config dict, see envs.shifts) wraps the raw env, in native
    action units, with noise seed `shift_seed`; None adds no wrapper. Raises EnvError (one
    line) for an unknown id, a missing optional dependency, unsupported spaces or a bad shift.
    """
    from envs.dummy import register_dummy

    shift = parse_shift(shift)  # a bad shift fails before the env is made

    register_dummy()  # the dummy must be registered before gym.make
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
    except gym.error.UnregisteredEnv as err:
        raise EnvError(_unknown_id_message(env_id)) from err
    except (gym.error.DependencyNotInstalled, ImportError) as err:
        entry = str(getattr(gym.registry.get(env_id), "entry_point", ""))
        if "mujoco" in entry and not _has_module("mujoco"):
            msg = f'{env_id} needs MuJoCo: pip install "gymnasium[mujoco]"'
        else:
            msg = f"{env_id}: missing dependency: {first_line(err)}"
        raise EnvError(msg) from err
    except gym.error.Error as err:  # e.g. a malformed id
        raise EnvError(f"cannot make {env_id!r}: {first_line(err)}") from err
    try:
        _check_spaces(env_id, env)
        if shift is not None:
            env = ShiftWrapper(env, shift, seed=shift_seed)
    except EnvError:
        env.close()
        raise
    env = ActionRepeat(env, action_repeat)  # also for 1: every env reports info["env_steps"]
    env = RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    space = env.observation_space
    float_space = gym.spaces.Box(  # cast the bounds first: Box warns when it has to
        space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32
    )
    return TransformObservation(env, lambda obs: np.asarray(obs, np.float32), float_space)


def make_env(
    env_id: str,
    *,
    num_envs: int = 1,
    seed: int,
    action_repeat: int = 1,
    max_episode_steps: int | None = None,
    shift: ShiftSpec | dict | None = None,
    shift_seed: int = 0,
    backend: str = "gymnasium",
) -> gym.vector.VectorEnv:
    """A seeded SyncVectorEnv of `num_envs` copies of `env_id`.

    Observations are float32 (num_envs, D); actions in [-1, 1] of shape (num_envs, A) are
    rescaled to the env's bounds. `max_episode_steps` counts raw env steps (None: the id's
    default). Autoreset is SAME_STEP: when an episode ends, `step` returns the reset
    observation and `info["final_obs"][i]` holds the true final one. Env i is seeded with
    `seed + i` (gymnasium's convention); later resets continue that stream. `shift`: see
    make_single_env; env i's ShiftWrapper gets noise seed `shift_seed + i`.

    `backend="mjx"`: `num_envs` MJX worlds stepped by one jitted call (envs.mjx_env, same
    interface and conventions, HalfCheetah-v5 and InvertedPendulum-v5 only, no shifts).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"env.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for name, value in (("num_envs", num_envs), ("action_repeat", action_repeat)):
        if not isinstance(value, int) or value < 1:
            raise EnvError(f"{name} must be a positive integer, got {value!r}")
    if max_episode_steps is not None and (
        not isinstance(max_episode_steps, int) or max_episode_steps < 1
    ):
        raise EnvError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
    if backend == "mjx":
        from envs.mjx_env import MjxVectorEnv

        if parse_shift(shift) is not None:
            raise EnvError(
                "shifts are not supported on the mjx backend (use env.backend=gymnasium)"
            )
        return MjxVectorEnv(
            env_id,
            num_envs=num_envs,
            seed=seed,
            action_repeat=action_repeat,
            max_episode_steps=max_episode_steps,
        )
    make = functools.partial(
        make_single_env,
        env_id,
        action_repeat=action_repeat,
        max_episode_steps=max_episode_steps,
        shift=shift,
    )
    first = make(shift_seed=shift_seed)  # fail early, with the one-line errors above
    rest = [functools.partial(make, shift_seed=shift_seed + i) for i in range(1, num_envs)]
    env = SyncVectorEnv([lambda: first, *rest], autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def env_spec(env_id: str, *, max_episode_steps: int | None = None) -> dict:
    """`dict(obs_dim, act_dim, max_episode_steps)` of `env_id` after the factory's wrappers."""
    env = make_single_env(env_id, max_episode_steps=max_episode_steps)
    try:
        return {
            "obs_dim": int(env.observation_space.shape[0]),
            "act_dim": int(env.action_space.shape[0]),
            "max_episode_steps": env.spec.max_episode_steps if env.spec else None,
        }
    finally:
        env.close()

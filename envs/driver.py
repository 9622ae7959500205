"""Driver: the only caller of `env.step` (host only, numpy).

Steps a SAME_STEP-autoreset vector env, recovers true final observations, checks finiteness,
tracks episode returns/lengths and counts raw env steps.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from worldmodel.errors import EnvError


@dataclasses.dataclass(frozen=True)
class Step:
    """One vector transition. N envs, D obs dims, A action dims.

    obs (N, D) float32: the observation the action was taken on.
    action (N, A) float32: the action executed, in [-1, 1].
    reward (N,) float32: summed over action repeats.
    next_obs (N, D) float32: the TRUE next observation; where the episode ended this step it
        is the final observation, never the reset one.
    terminated (N,) bool: the episode ended in a terminal state (no bootstrapping).
    truncated (N,) bool: the episode was cut by the time limit (not terminal).
    first (N,) bool: terminated | truncated; env i was reset, so the observation the agent
        acts on next (`Driver.obs[i]`) begins a new episode and its carry must be reset.
    episodes: one `dict(return=float, length=int)` per episode that finished this step;
        `length` counts raw env steps (including action repeat).
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    first: np.ndarray
    episodes: list[dict]


class Driver:
    """Steps a vector env made by `envs.make_env`.

    Usage: `obs = driver.reset(seed=s)`, then repeatedly
    `step = driver.step(agent_action(driver.obs, driver.first))`.
    """

    def __init__(self, env: gym.vector.VectorEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.obs_dim = int(env.single_observation_space.shape[0])
        self.act_dim = int(env.single_action_space.shape[0])
        spec = getattr(env, "spec", None) or env.get_attr("spec")[0]
        self.env_id = spec.id if spec is not None else type(env).__name__
        self.env_steps = 0  # raw env steps summed over envs, including action repeat
        self._obs: np.ndarray | None = None
        self._first = np.ones(self.num_envs, dtype=bool)
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    @property
    def obs(self) -> np.ndarray:
        """(N, D) the observation the agent must act on next (a reset one where `first`)."""
        if self._obs is None:
            raise RuntimeError("Driver.reset() must be called before stepping")
        return self._obs.copy()

    @property
    def first(self) -> np.ndarray:
        """(N,) bool: True where `obs` begins a new episode (all True after `reset`)."""
        return self._first.copy()

    def reset(self, *, seed: int | None) -> np.ndarray:
        """Reset all envs (env i seeded with seed + i); unfinished episodes are dropped.

        Returns obs (N, D) float32.
        """
        obs, _ = self.env.reset(seed=seed)
        obs = np.asarray(obs, dtype=np.float32)
        self._check_obs(obs, "reset")
        self._obs = obs
        self._first = np.ones(self.num_envs, dtype=bool)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs.copy()

    def step(self, action: np.ndarray) -> Step:
        """Apply `action` (N, A) in [-1, 1] (clipped there) and return the transition."""
        obs = self.obs
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.num_envs, self.act_dim):
            raise ValueError(
                f"action shape {action.shape} != (num_envs, act_dim) = "
                f"{(self.num_envs, self.act_dim)}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.env_id}: non-finite action {action.tolist()}")
        action = np.clip(action, -1.0, 1.0)

        reset_obs, reward, terminated, truncated, info = self.env.step(action)
        reset_obs = np.asarray(reset_obs, dtype=np.float32)
        reward = np.asarray(reward, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated

        next_obs = reset_obs.copy()
        for i in np.flatnonzero(done):
            next_obs[i] = info["final_obs"][i]
        self._check_obs(next_obs, "step")
        self._check_obs(reset_obs, "reset")
        if not np.all(np.isfinite(reward)):
            raise EnvError(f"{self.env_id}: non-finite reward {reward.tolist()}")

        raw = self._raw_steps(info, done)
        self.env_steps += int(raw.sum())
        self._returns += reward
        self._lengths += raw
        episodes = [
            {"return": float(self._returns[i]), "length": int(self._lengths[i])}
            for i in np.flatnonzero(done)
        ]
        self._returns[done] = 0.0
        self._lengths[done] = 0

        self._obs = reset_obs
        self._first = done.copy()
        return Step(
            obs=obs,
            action=action,
            reward=reward,
            next_obs=next_obs,
            terminated=terminated,
            truncated=truncated,
            first=done,
            episodes=episodes,
        )

    def _raw_steps(self, info: dict, done: np.ndarray) -> np.ndarray:
        """(N,) raw env steps each env took; 1 where the env does not report them."""
        raw = np.ones(self.num_envs, dtype=np.int64)
        if "env_steps" in info:
            mask = info["_env_steps"]
            raw[mask] = info["env_steps"][mask]
        final = info.get("final_info", {})
        if "env_steps" in final:  # ended envs report their step info in final_info
            mask = final["_env_steps"] & done
            raw[mask] = final["env_steps"][mask]
        return raw

    def _check_obs(self, obs: np.ndarray, where: str) -> None:
        if obs.shape != (self.num_envs, self.obs_dim):
            raise EnvError(
                f"{self.env_id}: {where} observation shape {obs.shape} != "
                f"{(self.num_envs, self.obs_dim)}"
            )
        if not np.all(np.isfinite(obs)):
            bad = np.flatnonzero(~np.all(np.isfinite(obs), axis=1)).tolist()
            raise EnvError(f"{self.env_id}: non-finite {where} observation in env(s) {bad}")

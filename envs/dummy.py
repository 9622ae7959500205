"""A tiny deterministic 1-D point mass for fast tests (host, numpy only).

Registered as `worldmodel/PointMass-v0` when `envs` is imported.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

DUMMY_ENV_ID = "worldmodel/PointMass-v0"


class PointMassEnv(gym.Env):
    """Point mass on a line pushed by a force towards a target.

    obs = [pos, vel, target] (float64, so the float32 cast is exercised), action = force in
    [-2, 2] (not [-1, 1], so rescaling is exercised), reward = -|pos - target|. The episode
    terminates when |pos| > `BOUND`; the time limit (50 steps) comes from the registration.
    Pushing with full force from rest leaves the bound within 17 steps; zero force never does.
    """

    metadata: ClassVar[dict] = {"render_modes": []}
    DT = 0.1
    BOUND = 2.0

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        self._state = np.zeros(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        pos = self.np_random.uniform(-0.5, 0.5)
        target = self.np_random.uniform(-1.0, 1.0)
        self._state = np.array([pos, 0.0, target])
        return self._state.copy(), {}

    def step(self, action):
        force = float(np.clip(np.asarray(action).reshape(-1)[0], -2.0, 2.0))
        pos, vel, target = self._state
        vel = vel + self.DT * force
        pos = pos + self.DT * vel
        self._state = np.array([pos, vel, target])
        reward = -abs(pos - target)
        terminated = bool(abs(pos) > self.BOUND)
        return self._state.copy(), float(reward), terminated, False, {}


def register_dummy() -> None:
    """Register the point mass with gymnasium once (importing twice is harmless)."""
    if DUMMY_ENV_ID not in gym.registry:
        gym.register(id=DUMMY_ENV_ID, entry_point=PointMassEnv, max_episode_steps=50)

"""Map observations back to MuJoCo simulator states (qpos, qvel), where the observation allows it.

Host only, numpy. Supported: Gymnasium v5 tasks whose observation begins with qpos[k:] ++ qvel
(k root coordinates skipped, e.g. HalfCheetah/Hopper/Walker2d: obs = qpos[1:] ++ qvel, k = 1;
InvertedPendulum: obs = qpos ++ qvel, k = 0). The skipped root position is not observed: it is
given at the first observation and integrated from the observed root velocity. Any other task
(Reacher's sin/cos/target observation, non-MuJoCo envs) maps to None.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.render import is_mujoco

# Tasks whose observation layout was checked against the simulator (tests/test_visualize.py).
SUPPORTED = ("HalfCheetah", "Hopper", "Walker2d", "InvertedPendulum", "Swimmer")


@dataclasses.dataclass(frozen=True)
class StateMap:
    """obs (D,) = qpos[skip:] ++ qvel ++ (anything else) for a model with nq, nv.

    `dt` is the simulated time between two consecutive observations the map is given
    (env.dt times the action repeat), used to integrate the unobserved root position.
    Velocities some tasks clip in the observation (Hopper/Walker2d: |qvel| <= 10) stay clipped;
    they do not affect rendering, which only needs qpos.
    """

    nq: int
    nv: int
    skip: int
    dt: float

    def state(self, obs: np.ndarray, root: np.ndarray | None = None):
        """obs (D,), root (skip,) position of the skipped coordinates (default zeros)
        -> (qpos (nq,), qvel (nv,)) float64."""
        obs = np.asarray(obs, np.float64)
        qpos, qvel = self.states(obs[None], root)
        return qpos[0], qvel[0]

    def states(self, obs: np.ndarray, root: np.ndarray | None = None):
        """A trajectory: obs (T, D), root (skip,) the root position at obs[0] (default zeros)
        -> (qpos (T, nq), qvel (T, nv)). Root_t = root_{t-1} + dt * (v_{t-1} + v_t) / 2 with v
        the observed root velocity (trapezoid: the sim takes several substeps per observation)."""
        obs = np.asarray(obs, np.float64)
        if obs.ndim != 2 or obs.shape[1] < self.nq - self.skip + self.nv:
            need = self.nq - self.skip + self.nv
            raise ValueError(f"obs must be (T, >= {need}), got {obs.shape}")
        n_pos = self.nq - self.skip
        qvel = obs[:, n_pos : n_pos + self.nv]
        root0 = np.zeros(self.skip) if root is None else np.asarray(root, np.float64)
        if root0.shape != (self.skip,):
            raise ValueError(f"root must have shape ({self.skip},), got {root0.shape}")
        v = qvel[:, : self.skip]
        steps = 0.5 * self.dt * (v[1:] + v[:-1])  # (T-1, skip)
        roots = root0 + np.concatenate([np.zeros((1, self.skip)), np.cumsum(steps, axis=0)])
        qpos = np.concatenate([roots, obs[:, :n_pos]], axis=1)
        return qpos, qvel.copy()

    def root(self, qpos: np.ndarray) -> np.ndarray:
        """The skipped coordinates (skip,) of a real qpos (nq,): the root to start from."""
        return np.asarray(qpos, np.float64)[: self.skip].copy()


def make_state_map(env, *, action_repeat: int = 1) -> StateMap | None:
    """The StateMap of `env` (any wrapper stack around a Gymnasium MuJoCo env), or None when its
    observation does not determine the state. Uses the env's `observation_structure` (v5)."""
    if not is_mujoco(env):
        return None
    inner = env.unwrapped
    spec = getattr(env, "spec", None) or getattr(inner, "spec", None)
    name = (spec.id if spec is not None else type(inner).__name__).split("/")[-1].split("-")[0]
    structure = getattr(inner, "observation_structure", None)
    if name not in SUPPORTED or not isinstance(structure, dict):
        return None
    nq, nv = inner.model.nq, inner.model.nv
    skip = int(structure.get("skipped_qpos", 0))
    if structure.get("qpos") != nq - skip or structure.get("qvel") != nv:
        return None
    return StateMap(nq=nq, nv=nv, skip=skip, dt=float(inner.dt) * action_repeat)

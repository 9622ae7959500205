"""Greedy single-env episodes and video files for the scripts (host only).

`greedy_episode` acts exactly like env 0 of `agents.evaluation.evaluate` with the same seed:
the env is reset with `seed` and decision t uses `key_for(seed, 'eval', t)` (with partitionable
threefry, key t split for one env equals its first split for N envs).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from worldmodel.errors import UserError
from worldmodel.rng import key_for


def greedy_episode(
    agent,
    state,
    env,
    *,
    seed: int,
    plan: bool = True,
    max_steps: int | None = None,
    on_step: Callable | None = None,
    calib=None,
) -> dict:
    """Run one greedy episode of a single env made by `envs.make_single_env` (T decisions,
    stopping at the episode's end or after `max_steps`). `on_step(env)` is called after the
    reset and after every step (e.g. to render the state reached). `calib`: the abstention
    calibration passed to `Agent.act` (None: the agent's default, uncalibrated); a 'stop'
    fallback ends the episode before the step, as in evaluation.

    Returns {'obs' (T+1, D), 'action' (T, A), 'reward' (T,), 'disagreement' (T,) (the model's
    score at the real state and chosen action), 'score' (T,) and 'abstained' (T,) (the abstention
    gate's windowed score and decision; NaN/False where the agent has no gate), 'qpos' (T+1, nq) and 'qvel' (T+1, nv) for MuJoCo
    envs else None, 'return' float, 'length' T, 'ended' bool (terminated or truncated)}.
    """
    inner = env.unwrapped
    mujoco_data = getattr(inner, "data", None) if hasattr(inner, "model") else None
    obs, _ = env.reset(seed=seed)
    carry = agent.init_carry(1)
    first = np.ones(1, bool)
    keys = ("obs", "action", "reward", "disagreement", "score", "abstained", "qpos", "qvel")
    out = {k: [] for k in keys}
    extra = {} if calib is None else {"calib": calib}

    def record(o):
        out["obs"].append(np.asarray(o, np.float32))
        if mujoco_data is not None:
            out["qpos"].append(mujoco_data.qpos.copy())
            out["qvel"].append(mujoco_data.qvel.copy())
        if on_step is not None:
            on_step(env)

    record(obs)
    ended = stopped = False
    t = 0
    while not ended and (max_steps is None or t < max_steps):
        action, carry, info = agent.act(
            state,
            carry,
            obs[None],
            first,
            key=key_for(seed, "eval", t),
            explore=False,
            plan=plan,
            **extra,
        )
        if bool(np.asarray(info.get("stop", [False]))[0]):
            stopped = ended = True
            break
        action = np.asarray(action)[0]
        obs, reward, terminated, truncated, _ = env.step(action)
        out["action"].append(action)
        out["reward"].append(float(reward))
        out["disagreement"].append(float(np.asarray(info["disagreement"])[0]))
        out["score"].append(float(np.asarray(info.get("score", [np.nan]))[0]))
        out["abstained"].append(bool(np.asarray(info.get("abstained", [False]))[0]))
        first = np.zeros(1, bool)
        ended = bool(terminated or truncated)
        t += 1
        record(obs)
    act_dim = env.action_space.shape[0]
    result = {
        "obs": np.stack(out["obs"]),
        "action": np.asarray(out["action"], np.float32).reshape(t, act_dim),
        "reward": np.asarray(out["reward"]),
        "disagreement": np.asarray(out["disagreement"]),
        "score": np.asarray(out["score"]),
        "abstained": np.asarray(out["abstained"], bool),
        "qpos": np.stack(out["qpos"]) if out["qpos"] else None,
        "qvel": np.stack(out["qvel"]) if out["qvel"] else None,
        "return": float(np.sum(out["reward"])),
        "length": t,
        "ended": ended,
        "stopped": stopped,
    }
    return result


def decision_fps(env, action_repeat: int, default: float = 10.0) -> float:
    """Real-time frames per second of one frame per decision (MuJoCo: 1 / (dt * repeat))."""
    dt = getattr(env.unwrapped, "dt", None)
    return 1.0 / (dt * action_repeat) if dt else default


def _check_video_backend(path: Path) -> None:
    if importlib.util.find_spec("imageio") is None:
        raise UserError("writing videos needs imageio: pip install imageio imageio-ffmpeg")
    if path.suffix.lower() == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise UserError("writing mp4 needs ffmpeg: pip install imageio-ffmpeg")


class VideoWriter:
    """Streams RGB uint8 frames (H, W, 3) to an mp4 (libx264) or a gif, by the path's suffix.
    H and W should be multiples of 16 for mp4 (otherwise imageio resizes them)."""

    def __init__(self, path: Path, *, fps: float):
        import imageio.v2 as imageio

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".gif"):
            raise UserError(f"video path {self.path} must end in .mp4 or .gif")
        _check_video_backend(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".mp4":
            self._writer = imageio.get_writer(
                self.path, fps=fps, codec="libx264", quality=7, macro_block_size=16
            )
        else:
            self._writer = imageio.get_writer(self.path, mode="I", duration=1000 / fps, loop=0)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        """frame (H, W, 3) uint8; every frame must have the first one's size."""
        with warnings.catch_warnings():
            # The first frame starts ffmpeg by fork+exec: JAX's fork warning does not apply.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
            self._writer.append_data(np.asarray(frame, np.uint8))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Headless rendering of MuJoCo states with MuJoCo's own `mujoco.Renderer` (host only).

Frames are always rendered from a state (qpos, qvel) copied into a scratch `MjData` and
`mj_forward`ed, both for the live env and for imagined states, so the two are pixel-comparable
(the env's own `data` holds kinematics one substep behind its qpos after `mj_step`).
The GL backend is chosen by MUJOCO_GL, which the scripts set (default egl) before importing mujoco.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from worldmodel.errors import EnvError, first_line

DEFAULT_SIZE = 480


class RenderError(EnvError):
    """No usable headless OpenGL (a system package is missing); the message names it."""


def _gl_hint() -> str:
    """One-line install hint for the backend MUJOCO_GL selects (read only to word the error)."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower() or "unset"
    if backend == "osmesa":
        fix = "install libosmesa6 (apt-get install -y libosmesa6), or use MUJOCO_GL=egl"
    elif backend == "egl":
        fix = (
            "install libegl1 (apt-get install -y libegl1 libgl1-mesa-dri), "
            "or install libosmesa6 and set MUJOCO_GL=osmesa"
        )
    else:
        fix = (
            "set MUJOCO_GL=egl (needs libegl1: apt-get install -y libegl1 libgl1-mesa-dri) "
            "or MUJOCO_GL=osmesa (needs libosmesa6) before mujoco is imported"
        )
    return f"MUJOCO_GL={backend}; {fix}"


def is_mujoco(env) -> bool:
    """True when `env` (any wrapper stack) is a Gymnasium MuJoCo env with `model` and `data`."""
    inner = getattr(env, "unwrapped", env)
    return isinstance(getattr(inner, "model", None), mujoco.MjModel) and isinstance(
        getattr(inner, "data", None), mujoco.MjData
    )


def _camera(model: mujoco.MjModel, camera_config: dict | None) -> int | mujoco.MjvCamera:
    """The model's `track` camera (HalfCheetah/Hopper/Walker2d: follows the centre of mass);
    otherwise a free camera set up like Gymnasium's `default_camera_config`, tracking body
    `trackbodyid` when that is >= 1; with no config, a camera tracking body 1."""
    track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if track >= 0:
        return track
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    config = dict(camera_config) if camera_config is not None else {"trackbodyid": 1}
    for key, value in config.items():
        if isinstance(value, np.ndarray | list | tuple):
            getattr(cam, key)[:] = value
        else:
            setattr(cam, key, value)
    if cam.trackbodyid >= 1 and model.nbody > cam.trackbodyid:
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    return cam


class StateRenderer:
    """Renders (qpos, qvel) of one `MjModel` to RGB uint8 frames (H, W, 3).

    `fast=True` (default) drops shadows, reflections and multisampling: about 10x faster on a
    CPU (llvmpipe), where the 4096² shadow map dominates every frame at any size. The model is
    left unchanged (offscreen settings are set only while the GL context is created).
    Raises RenderError (one line, naming the package to install) when no GL backend works.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        *,
        size: int | tuple[int, int] = DEFAULT_SIZE,
        camera_config: dict | None = None,
        fast: bool = True,
    ):
        height, width = (size, size) if isinstance(size, int) else size
        self.model, self.fast = model, fast
        self.height, self.width = int(height), int(width)
        self._data = mujoco.MjData(model)
        self._camera = _camera(model, camera_config)
        quality, glob = model.vis.quality, model.vis.global_
        saved = (quality.offsamples, glob.offwidth, glob.offheight)
        if fast:
            quality.offsamples = 0
        glob.offwidth, glob.offheight = max(glob.offwidth, width), max(glob.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height=self.height, width=self.width)
        # The failures seen without a working backend: FatalError (no GL platform loaded),
        # ImportError (libEGL/libOSMesa missing), AttributeError (PyOpenGL got no OSMesa:
        # 'NoneType' object has no attribute 'glGetError'), RuntimeError (no EGL device).
        except (mujoco.FatalError, ImportError, AttributeError, RuntimeError) as err:
            raise RenderError(
                f"headless rendering failed ({first_line(err)}); {_gl_hint()}"
            ) from err
        finally:
            quality.offsamples, glob.offwidth, glob.offheight = saved

    def render(self, qpos: np.ndarray, qvel: np.ndarray | None = None) -> np.ndarray:
        """qpos (nq,), qvel (nv,) or None (zeros) -> frame (H, W, 3) uint8."""
        qpos = np.asarray(qpos, np.float64)
        if qpos.shape != (self.model.nq,):
            raise ValueError(f"qpos has shape {qpos.shape}, the model needs ({self.model.nq},)")
        self._data.qpos[:] = qpos
        self._data.qvel[:] = 0.0 if qvel is None else np.asarray(qvel, np.float64)
        mujoco.mj_forward(self.model, self._data)
        self._renderer.update_scene(self._data, camera=self._camera)
        if self.fast:
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> StateRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_renderer(env, *, size: int | tuple[int, int] = DEFAULT_SIZE, fast: bool = True):
    """A `StateRenderer` for a Gymnasium MuJoCo env (any wrapper stack), using its camera setup.

    Raises EnvError when `env` is not a MuJoCo env, RenderError when no GL backend works.
    """
    if not is_mujoco(env):
        env_id = getattr(getattr(env, "spec", None), "id", type(env).__name__)
        raise EnvError(f"{env_id} is not a MuJoCo env: nothing to render")
    inner = env.unwrapped
    config = getattr(getattr(inner, "mujoco_renderer", None), "default_cam_config", None)
    return StateRenderer(inner.model, size=size, camera_config=config, fast=fast)


def env_state(env) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the env's current (qpos (nq,), qvel (nv,))."""
    data = env.unwrapped.data
    return data.qpos.copy(), data.qvel.copy()


def render_env(env, renderer: StateRenderer) -> np.ndarray:
    """The env's current state as a frame (H, W, 3) uint8, through `renderer`."""
    return renderer.render(*env_state(env))


def render_frame(env, *, size: int | tuple[int, int] = DEFAULT_SIZE, fast: bool = True):
    """One-off frame of the env's current state (creates and frees a GL context: for many
    frames keep a `make_renderer` instead)."""
    with make_renderer(env, size=size, fast=fast) as renderer:
        return render_env(env, renderer)

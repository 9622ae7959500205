"""Physical shifts of a gymnasium MuJoCo env (host only): heavier bodies, weaker or biased motors,
pushes, friction, gravity, damping and sensor noise, switched on at a chosen step of each episode.

Used for out-of-distribution evaluation and continual learning. `severity` per kind:

    kind             severity means                                      neutral  e.g. severe
    ---------------  --------------------------------------------------  -------  -----------
    mass             x body_mass and body_inertia of every body (> 0)     1.0      1.5
    actuator_gain    x every actuator's force (>= 0; 0 = dead motors)     1.0      0.5
    actuator_offset  + to every control, in [-1, 1] action units, i.e.    0.0      0.3
                     times each actuator's half-range (|s| <= 2)
    actuator_noise   Gaussian control noise, std = s x half-range (>= 0)  0.0      0.3
    external_force   constant push on body 1 (the root/torso), as a       0.0      0.5
                     fraction of the robot's total weight m*|g| (>= 0)
    friction         x sliding friction geom_friction[:, 0] (>= 0)        1.0      0.5
    gravity          x opt.gravity (>= 0; 0 = zero-g)                     1.0      1.5
    damping          x joint damping dof_damping (>= 0)                   1.0      2.0
    obs_noise        Gaussian noise on returned observations, std = s     0.0      0.1
                     in the observation's own units (>= 0)

Config slice (the `shift:` section; `kind: none` or a missing section means no shift)::

    shift:
      kind: mass            # one of SHIFT_KINDS, or none
      severity: 1.5         # see the table above
      at_step: 0            # raw env step of each episode at which the shift switches on
      # direction: [-1.0, 0.0, 0.0]   # external_force only (normalised; default +x)
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from worldmodel.errors import EnvError

SCALE_KINDS = ("mass", "actuator_gain", "friction", "gravity", "damping")
ACTION_KINDS = ("actuator_offset", "actuator_noise")
SHIFT_KINDS = (*SCALE_KINDS, *ACTION_KINDS, "external_force", "obs_noise")
# Kinds that need `env.unwrapped.model/.data`; the others only touch actions or observations.
MUJOCO_KINDS = (*SCALE_KINDS, "external_force")
_KEYS = ("kind", "severity", "at_step", "direction")


@dataclass(frozen=True)
class ShiftSpec:
    """One shift: `kind` (in SHIFT_KINDS), `severity` (see the module table), `at_step` (the
    0-based raw env step of each episode from which the shift is on; 0 = from reset) and
    `direction` (3-vector of the external_force push, normalised; ignored by other kinds).

    Invalid values raise a one-line EnvError.
    """

    kind: str
    severity: float
    at_step: int = 0
    direction: tuple[float, float, float] = (1.0, 0.0, 0.0)

    def __post_init__(self):
        kind, sev = self.kind, self.severity
        if kind not in SHIFT_KINDS:
            raise EnvError(f"unknown shift kind {kind!r}; valid kinds: {', '.join(SHIFT_KINDS)}")
        if isinstance(sev, bool) or not isinstance(sev, int | float) or not math.isfinite(sev):
            raise EnvError(f"shift {kind!r}: severity must be a finite number, got {sev!r}")
        if kind == "mass" and sev <= 0:
            raise EnvError(f"shift 'mass': severity is a scale factor and must be > 0, got {sev}")
        if kind == "actuator_offset" and abs(sev) > 2:
            raise EnvError(f"shift 'actuator_offset': |severity| must be <= 2, got {sev}")
        if kind not in ("mass", "actuator_offset") and sev < 0:
            raise EnvError(f"shift {kind!r}: severity must be >= 0, got {sev}")
        at = self.at_step
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise EnvError(f"shift {kind!r}: at_step must be an integer >= 0, got {at!r}")
        try:
            direction = np.asarray(self.direction, dtype=np.float64).reshape(3)
        except (TypeError, ValueError):
            direction = np.full(3, np.nan)
        norm = float(np.linalg.norm(direction))
        if not (math.isfinite(norm) and norm > 0):
            raise EnvError(
                f"shift {kind!r}: direction must be a nonzero 3-vector, got {self.direction!r}"
            )
        object.__setattr__(self, "severity", float(sev))
        object.__setattr__(self, "direction", tuple(float(x) for x in direction / norm))


def parse_shift(cfg: ShiftSpec | Mapping | None) -> ShiftSpec | None:
    """The config slice `{kind, severity, at_step=0, direction=+x}` as a ShiftSpec.

    None, `kind: none` or `kind: null` mean no shift (returns None); a ShiftSpec is returned
    as is. Unknown keys, kinds or bad values raise a one-line EnvError.
    """
    if cfg is None or isinstance(cfg, ShiftSpec):
        return cfg
    if not isinstance(cfg, Mapping):
        raise EnvError(f"shift must be a mapping with keys {', '.join(_KEYS)}; got {cfg!r}")
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise EnvError(
            f"unknown shift key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(_KEYS)}"
        )
    kind = cfg.get("kind")
    if kind is None or (isinstance(kind, str) and kind.lower() == "none"):
        return None
    if "severity" not in cfg:
        raise EnvError(f"shift {kind!r}: missing 'severity'")
    extra = {k: cfg[k] for k in ("at_step", "direction") if k in cfg}
    if "direction" in extra and isinstance(extra["direction"], list):
        extra["direction"] = tuple(extra["direction"])
    return ShiftSpec(kind, cfg["severity"], **extra)


# Benchmark presets. The push opposes running (-x) so that it hinders, not helps, locomotion.
SEVERE_SHIFTS: Mapping[str, ShiftSpec] = types.MappingProxyType(
    {
        "mass": ShiftSpec("mass", 1.5),
        "actuator_gain": ShiftSpec("actuator_gain", 0.5),
        "actuator_offset": ShiftSpec("actuator_offset", 0.3),
        "actuator_noise": ShiftSpec("actuator_noise", 0.3),
        "external_force": ShiftSpec("external_force", 0.5, direction=(-1.0, 0.0, 0.0)),
    }
)
MINOR_SHIFTS: Mapping[str, ShiftSpec] = types.MappingProxyType({"mass": ShiftSpec("mass", 1.01)})


def _mujoco_parts(env: gym.Env):
    """(model, data) of a MuJoCo env, or None when `env.unwrapped` is not one."""
    model = getattr(env.unwrapped, "model", None)
    data = getattr(env.unwrapped, "data", None)
    try:
        import mujoco
    except ImportError:
        return None
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data
    return None


class ShiftWrapper(gym.Wrapper):
    """Applies a ShiftSpec to `env`, which should be the raw `gym.make`'d env (native action
    units: the factory puts this wrapper inside ActionRepeat and RescaleAction).

    Each episode the world starts unshifted and the shift is on from raw step `spec.at_step`
    (at_step=0: model changes are made before the inner reset, so the reset observation is
    already shifted). `info["shift_active"]` (bool) on reset and step says whether that
    transition was shifted. Copies of the original model arrays are taken at construction, so
    the wrapper owns these arrays afterwards: change them only through it.

    Model-parameter kinds (mass, actuator_gain, friction, gravity, damping) overwrite the
    mjModel arrays with original x severity; mass also recomputes MuJoCo's mass-derived
    constants (mj_setConst). actuator_gain scales gainprm[:, :3] and biasprm[:, :3] rather than
    gear: the actuator force gain*ctrl + bias is then exactly x severity for every fixed/affine
    actuator, leaving the transmission (lengths, moment arms, site wrench directions) alone;
    for gymnasium's motors (gainprm[0] = 1, no bias, strength in gear) this equals scaling gear.
    actuator_offset/noise change the control (in native units: half-range from the action
    space, which gymnasium's MuJoCo envs build from actuator_ctrlrange) and clip it to the
    range; the env's reward (e.g. a control cost) then sees the applied control. Noise comes
    from a numpy Generator seeded by `seed`, re-seeded by (seed, reset seed) on a seeded reset.

    `set_shift(spec | None)` changes the world for continual learning (see its docstring).
    Raises a one-line EnvError for a MuJoCo-only kind on a non-MuJoCo env.
    """

    def __init__(self, env: gym.Env, spec: ShiftSpec | None, *, seed: int = 0):
        super().__init__(env)
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)
        self._parts = _mujoco_parts(env)
        self._orig: dict[str, np.ndarray] = {}
        self._weight = 0.0
        if self._parts is not None:
            model = self._parts[0]
            for name in ("body_mass", "body_inertia", "actuator_gainprm", "actuator_biasprm"):
                self._orig[name] = getattr(model, name).copy()
            for name in ("geom_friction", "dof_damping"):
                self._orig[name] = getattr(model, name).copy()
            self._orig["gravity"] = model.opt.gravity.copy()
            self._weight = float(model.body_mass.sum() * np.linalg.norm(model.opt.gravity))
        self.shift: ShiftSpec | None = None  # read-only: change it with set_shift
        self._on, self._t = False, 0
        self.set_shift(spec)

    def set_shift(self, spec: ShiftSpec | None) -> None:
        """Replace the shift (None: none), e.g. between tasks of a continual-learning schedule.

        The original world is restored at once; the new spec then follows its `at_step`
        counted in the current episode. Call it between episodes: after a vector env's
        same-step autoreset the new episode has begun, so at_step=0 switches on at its first
        step (its reset observation was unshifted; `info["shift_active"]` tells which).
        """
        self._switch(False)
        if spec is not None and spec.kind in MUJOCO_KINDS:
            env_id = self.env.spec.id if self.env.spec else type(self.env.unwrapped).__name__
            if self._parts is None:
                raise EnvError(f"shift {spec.kind!r} needs a MuJoCo env; {env_id} is not one")
            model = self._parts[0]
            # mjtGain/mjtBias 0 = fixed/none, 1 = affine: force linear in gainprm, biasprm.
            linear = np.isin(model.actuator_gaintype, (0, 1)) & np.isin(
                model.actuator_biastype, (0, 1)
            )
            if spec.kind == "actuator_gain" and not linear.all():
                raise EnvError(
                    f"shift 'actuator_gain' needs fixed/affine actuators; {env_id} has others"
                )
        self.shift = spec

    @property
    def shift_active(self) -> bool:
        """Whether the shift is on right now."""
        return self._on

    def _switch(self, on: bool) -> None:
        """Put the model arrays in the shifted (on) or original state; no-op if already there."""
        spec = self.shift
        if on == self._on or spec is None:
            self._on = on and spec is not None
            return
        self._on = on
        if spec.kind not in SCALE_KINDS:
            if spec.kind == "external_force" and not on:
                self._parts[1].xfrc_applied[1, :3] = 0.0
            return
        model, orig = self._parts[0], self._orig
        s = spec.severity if on else 1.0  # x 1.0 restores the originals bit for bit
        if spec.kind == "mass":
            import mujoco

            model.body_mass[:] = orig["body_mass"] * s
            model.body_inertia[:] = orig["body_inertia"] * s
            # Recompute the mass-derived constants (subtree masses, invweights used for
            # constraint regularisation, ...) on scratch data so the live state is untouched.
            mujoco.mj_setConst(model, mujoco.MjData(model))
        elif spec.kind == "actuator_gain":
            model.actuator_gainprm[:, :3] = orig["actuator_gainprm"][:, :3] * s
            model.actuator_biasprm[:, :3] = orig["actuator_biasprm"][:, :3] * s
        elif spec.kind == "friction":
            model.geom_friction[:, 0] = orig["geom_friction"][:, 0] * s
        elif spec.kind == "gravity":
            model.opt.gravity[:] = orig["gravity"] * s
        else:  # damping
            model.dof_damping[:] = orig["dof_damping"] * s

    def _push(self) -> None:
        """(Re-)apply the external force on body 1 (mj_resetData clears xfrc_applied)."""
        if self._on and self.shift.kind == "external_force":
            force = self.shift.severity * self._weight * np.asarray(self.shift.direction)
            self._parts[1].xfrc_applied[1, :3] = force

    def _noisy_obs(self, obs):
        if not (self._on and self.shift.kind == "obs_noise"):
            return obs
        obs = np.asarray(obs)
        noise = self._rng.standard_normal(obs.shape) * self.shift.severity
        return (obs + noise).astype(obs.dtype, copy=False)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Restore the world, switch the shift on first if at_step == 0, then reset `env`."""
        if seed is not None:
            self._rng = np.random.default_rng([self._seed, int(seed)])
        self._t = 0
        self._switch(self.shift is not None and self.shift.at_step == 0)
        obs, info = self.env.reset(seed=seed, options=options)
        self._push()
        return self._noisy_obs(obs), {**info, "shift_active": self._on}

    def step(self, action):
        """Switch on at step `at_step`, shift the control if asked, then step `env`."""
        spec = self.shift
        if spec is not None and self._t >= spec.at_step:
            self._switch(True)
        if self._on and spec.kind in ACTION_KINDS:
            action = np.asarray(action)
            low, high = self.env.action_space.low, self.env.action_space.high
            half = (high.astype(np.float64) - low) / 2
            if spec.kind == "actuator_offset":
                delta = spec.severity * half
            else:
                delta = self._rng.standard_normal(action.shape) * spec.severity * half
            action = np.clip(action + delta, low, high).astype(action.dtype, copy=False)
        self._push()
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        return (
            self._noisy_obs(obs),
            reward,
            terminated,
            truncated,
            {**info, "shift_active": self._on},
        )


def find_shift_wrappers(env) -> list[ShiftWrapper]:
    """The ShiftWrapper of each sub-env of a vector env (or of a single env), in env order;
    e.g. `for w in find_shift_wrappers(vec_env): w.set_shift(spec)` between episodes."""
    found = []
    for sub in getattr(env, "envs", None) or [env]:
        while sub is not None and not isinstance(sub, ShiftWrapper):
            sub = getattr(sub, "env", None)
        if sub is not None:
            found.append(sub)
    return found

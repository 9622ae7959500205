"""Shift wrappers: each kind changes the mjModel/trajectory, neutral severities are bit-identical,
mid-episode switching, continual-learning `set_shift`, seeding and one-line errors."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import RescaleAction, TransformObservation

from envs import (
    DUMMY_ENV_ID,
    MINOR_SHIFTS,
    SEVERE_SHIFTS,
    SHIFT_KINDS,
    ShiftSpec,
    ShiftWrapper,
    find_shift_wrappers,
    make_env,
    parse_shift,
)
from envs.factory import ActionRepeat
from worldmodel.errors import EnvError

IP, HC = "InvertedPendulum-v5", "HalfCheetah-v5"
SHIFTED = {
    "mass": 1.5,
    "actuator_gain": 0.5,
    "actuator_offset": 0.3,
    "actuator_noise": 0.3,
    "external_force": 0.5,
    "friction": 0.2,
    "gravity": 1.5,
    "damping": 3.0,
    "obs_noise": 0.1,
}
NEUTRAL = {k: 1.0 for k in ("mass", "actuator_gain", "friction", "gravity", "damping")} | {
    k: 0.0 for k in ("actuator_offset", "actuator_noise", "external_force", "obs_noise")
}
# InvertedPendulum has no contacts, so friction cannot change its trajectory.
CASES = [(k, HC) for k in SHIFT_KINDS] + [(k, IP) for k in SHIFT_KINDS if k != "friction"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT (HalfCheetah warns) to the cwd


def _actions(env_id: str, n: int) -> np.ndarray:
    """Small fixed native-unit actions (InvertedPendulum falls over from big ones)."""
    env = gym.make(env_id)
    scale = 0.3 if env_id == IP else 1.0
    rng = np.random.default_rng(0)
    high = env.action_space.high
    env.close()
    return (rng.uniform(-1, 1, (n, *high.shape)) * high * scale).astype(np.float32)


def _rollout(env: gym.Env, actions: np.ndarray, seed: int = 0) -> dict:
    """obs (n+1, D), rewards, qpos (n+1, Q) and info['shift_active'] flags of one episode."""
    obs, info = env.reset(seed=seed)
    out = {"obs": [obs], "reward": [], "qpos": [env.unwrapped.data.qpos.copy()]}
    out["active"] = [info.get("shift_active")]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out["obs"].append(obs)
        out["reward"].append(reward)
        out["qpos"].append(env.unwrapped.data.qpos.copy())
        out["active"].append(info.get("shift_active"))
        if terminated or truncated:
            break
    return {k: np.array(v) for k, v in out.items()}


def _wrapped(env_id: str, kind: str, severity: float, at_step: int = 0, seed: int = 0):
    return ShiftWrapper(gym.make(env_id), ShiftSpec(kind, severity, at_step), seed=seed)


@pytest.mark.parametrize(("kind", "env_id"), CASES)
def test_shift_changes_model_and_trajectory(kind, env_id):
    sev = SHIFTED[kind]
    base, env = gym.make(env_id), _wrapped(env_id, kind, sev)
    m0, m = base.unwrapped.model, env.unwrapped.model
    actions = _actions(env_id, 15)
    ref, got = _rollout(base, actions), _rollout(env, actions)
    expected = {
        "mass": [(m.body_mass, m0.body_mass * sev), (m.body_inertia, m0.body_inertia * sev)],
        "actuator_gain": [(m.actuator_gainprm[:, 0], m0.actuator_gainprm[:, 0] * sev)],
        "friction": [(m.geom_friction[:, 0], m0.geom_friction[:, 0] * sev)],
        "gravity": [(m.opt.gravity, m0.opt.gravity * sev)],
        "damping": [(m.dof_damping, m0.dof_damping * sev)],
    }.get(kind, [])
    for shifted, want in expected:
        np.testing.assert_array_equal(shifted, want)
    if kind == "mass":  # MuJoCo's mass-derived constants follow
        np.testing.assert_allclose(m.body_subtreemass, m0.body_subtreemass * sev)
    if kind == "external_force":
        weight = m0.body_mass.sum() * 9.81
        np.testing.assert_allclose(
            env.unwrapped.data.xfrc_applied[1], [sev * weight, 0, 0, 0, 0, 0]
        )
    if kind == "actuator_offset":  # the last applied control: action + 0.3 * half-range, clipped
        half = m0.actuator_ctrlrange[:, 1]
        want = np.clip(actions[len(got["reward"]) - 1] + sev * half, -half, half)
        np.testing.assert_allclose(env.unwrapped.data.ctrl, want, rtol=1e-6)
    assert got["active"].all()
    n = min(len(ref["obs"]), len(got["obs"]))
    assert not np.array_equal(ref["obs"][:n], got["obs"][:n])
    if kind == "obs_noise":  # noisy sensors, same physics
        np.testing.assert_array_equal(ref["qpos"], got["qpos"])
        np.testing.assert_array_equal(ref["reward"], got["reward"])
    else:
        assert not np.array_equal(ref["qpos"][:n], got["qpos"][:n])


@pytest.mark.parametrize("env_id", [IP, HC])
def test_neutral_severity_is_bit_identical(env_id):
    actions = _actions(env_id, 15)
    ref = _rollout(gym.make(env_id), actions)
    for kind in SHIFT_KINDS:
        got = _rollout(_wrapped(env_id, kind, NEUTRAL[kind]), actions)
        for key in ("obs", "reward", "qpos"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{kind}: {key}")


def _vec_rollout(env, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    obs, rewards = [env.reset(seed=3)[0]], []
    for _ in range(steps):
        o, r, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        obs.append(o)
        rewards.append(r)
    env.close()
    return np.array(obs), np.array(rewards)


def test_make_env_without_shift_is_unchanged():
    env = make_env(HC, num_envs=2, seed=3, action_repeat=2)
    assert find_shift_wrappers(env) == []
    # The pre-shift factory stack, built by hand.
    old = [
        TransformObservation(
            RescaleAction(ActionRepeat(gym.make(HC), 2), np.float32(-1), np.float32(1)),
            lambda o: np.asarray(o, np.float32),
            None,
        )
        for _ in range(2)
    ]
    old = gym.vector.SyncVectorEnv(
        [lambda e=e: e for e in old], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    for got, want in zip(_vec_rollout(env), _vec_rollout(old), strict=True):
        np.testing.assert_array_equal(got, want)
    neutral = make_env(
        HC, num_envs=2, seed=3, action_repeat=2, shift={"kind": "mass", "severity": 1}
    )
    assert len(find_shift_wrappers(neutral)) == 2
    for got, want in zip(_vec_rollout(neutral), _vec_rollout(old), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["mass", "external_force", "actuator_gain"])
def test_mid_episode_switch_and_restore_at_reset(kind):
    k, actions = 5, _actions(HC, 12)
    base, env = gym.make(HC), _wrapped(HC, kind, SHIFTED[kind], at_step=k)
    m0, m = base.unwrapped.model, env.unwrapped.model
    for _ in range(2):  # the second episode: restored at reset, shifted again at step k
        ref, got = _rollout(base, actions), _rollout(env, actions)
        assert got["active"].tolist() == [False] * (k + 1) + [True] * (len(actions) - k)
        np.testing.assert_array_equal(got["obs"][: k + 1], ref["obs"][: k + 1])
        np.testing.assert_array_equal(got["reward"][:k], ref["reward"][:k])
        assert all(
            not np.array_equal(g, r)
            for g, r in zip(got["obs"][k + 1 :], ref["obs"][k + 1 :], strict=True)
        )
        env.reset(seed=1)
        np.testing.assert_array_equal(m.body_mass, m0.body_mass)
        np.testing.assert_array_equal(m.body_subtreemass, m0.body_subtreemass)
        np.testing.assert_array_equal(m.actuator_gainprm, m0.actuator_gainprm)
        assert not env.unwrapped.data.xfrc_applied.any() and not env.shift_active


def test_set_shift_between_episodes_and_vector_seeds():
    env = make_env(HC, num_envs=2, seed=0, shift=SEVERE_SHIFTS["mass"], shift_seed=7)
    wrappers = find_shift_wrappers(env)
    assert [w._seed for w in wrappers] == [7, 8]
    model = wrappers[0].unwrapped.model
    m0 = gym.make(HC).unwrapped.model
    np.testing.assert_array_equal(model.body_mass, m0.body_mass * 1.5)
    for w in wrappers:
        w.set_shift(ShiftSpec("gravity", 0.5))
    np.testing.assert_array_equal(model.body_mass, m0.body_mass)  # restored at once
    *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert info["shift_active"].all()
    np.testing.assert_array_equal(model.opt.gravity, m0.opt.gravity * 0.5)
    for w in wrappers:
        w.set_shift(None)
    env.reset(seed=0)
    np.testing.assert_array_equal(model.opt.gravity, m0.opt.gravity)
    env.close()


def test_noise_is_seeded_by_wrapper_and_reset_seed():
    actions = _actions(HC, 8)
    for kind in ("actuator_noise", "obs_noise"):
        a, b = (_rollout(_wrapped(HC, kind, 0.3, seed=s), actions) for s in (0, 0))
        c = _rollout(_wrapped(HC, kind, 0.3, seed=1), actions)
        np.testing.assert_array_equal(a["obs"], b["obs"])
        assert not np.array_equal(a["obs"], c["obs"])
        env = _wrapped(HC, kind, 0.3)  # a seeded reset re-seeds: the same noise again
        first, again = _rollout(env, actions), _rollout(env, actions)
        np.testing.assert_array_equal(first["obs"], again["obs"])


def test_action_and_obs_shifts_work_on_any_env():
    push = np.ones((1, 1), np.float32)
    ref = make_env(DUMMY_ENV_ID, seed=0)
    ref_obs = [ref.reset(seed=0)[0], ref.step(push)[0]]
    for kind, severity in (("obs_noise", 0.5), ("actuator_offset", -0.5)):
        env = make_env(DUMMY_ENV_ID, seed=0, shift={"kind": kind, "severity": severity})
        obs, info = env.reset(seed=0)
        assert info["shift_active"].all() and obs.dtype == np.float32
        assert np.array_equal(obs, ref_obs[0]) == (kind == "actuator_offset")
        obs, *_ = env.step(push)
        assert not np.array_equal(obs, ref_obs[1])
        if kind == "actuator_offset":  # force 2 - 0.5 * 2 = 1 instead of 2: velocity 0.1
            np.testing.assert_allclose(obs[0, 1], 0.1, rtol=1e-6)


def _one_line_error(call, *match):
    with pytest.raises(EnvError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg and all(m in msg for m in match), msg


def test_errors_are_one_line():
    _one_line_error(
        lambda: parse_shift({"kind": "wind", "severity": 1}), "'wind'", "mass", "obs_noise"
    )
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": 0}), "> 0")
    _one_line_error(lambda: parse_shift({"kind": "gravity", "severity": -1}), ">= 0")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": "big"}), "finite number")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": float("nan")}), "finite")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": True}), "finite number")
    _one_line_error(lambda: parse_shift({"kind": "actuator_offset", "severity": 3}), "<= 2")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": 2, "at_step": -1}), "at_step")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": 2, "at_step": 1.5}), "at_step")
    _one_line_error(lambda: parse_shift({"kind": "mass"}), "severity")
    _one_line_error(lambda: parse_shift({"kind": "mass", "severity": 2, "sev": 1}), "'sev'")
    _one_line_error(
        lambda: parse_shift({"kind": "external_force", "severity": 1, "direction": [0, 0, 0]}),
        "direction",
    )
    _one_line_error(lambda: parse_shift("mass"), "mapping")
    _one_line_error(
        lambda: make_env(DUMMY_ENV_ID, seed=0, shift={"kind": "mass", "severity": 1.5}),
        f"shift 'mass' needs a MuJoCo env; {DUMMY_ENV_ID} is not one",
    )


def test_parse_shift_and_presets():
    assert parse_shift(None) is None
    assert parse_shift({"kind": "none", "severity": 1.0}) is None
    assert parse_shift({"kind": None}) is None
    spec = parse_shift(
        {"kind": "external_force", "severity": 1, "at_step": 3, "direction": [0, 2, 0]}
    )
    assert spec == ShiftSpec("external_force", 1.0, 3, (0.0, 1.0, 0.0))
    assert isinstance(spec.severity, float) and parse_shift(spec) is spec
    assert SEVERE_SHIFTS["mass"].severity == 1.5 and MINOR_SHIFTS["mass"].severity == 1.01
    assert all(s.kind == name for name, s in {**SEVERE_SHIFTS, **MINOR_SHIFTS}.items())

"""Env contract tests over the task registry: spaces, action rescaling, seeding, errors."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import RescaleAction

import envs.factory
from envs import DUMMY_ENV_ID, Driver, env_spec, make_env, make_single_env
from worldmodel.errors import EnvError

TASK_IDS = [
    "InvertedPendulum-v5",
    "Pendulum-v1",
    "Reacher-v5",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    DUMMY_ENV_ID,
]


class _ImageObsEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, shape=(4, 4), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)


class _UnboundedActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)


for _name, _cls in (("ImageObs", _ImageObsEnv), ("UnboundedAction", _UnboundedActionEnv)):
    if f"worldmodel-test/{_name}-v0" not in gym.registry:
        gym.register(id=f"worldmodel-test/{_name}-v0", entry_point=_cls)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT (HalfCheetah warns) to the cwd


def _find_rescale(env: gym.Env) -> RescaleAction:
    while not isinstance(env, RescaleAction):
        env = env.env
    return env


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_spaces_are_float32_boxes(env_id):
    env = make_env(env_id, num_envs=2, seed=0)
    obs_space, act_space = env.single_observation_space, env.single_action_space
    assert isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.float32
    assert isinstance(act_space, gym.spaces.Box) and act_space.dtype == np.float32
    assert len(obs_space.shape) == 1 and len(act_space.shape) == 1
    np.testing.assert_array_equal(act_space.low, -1.0)
    np.testing.assert_array_equal(act_space.high, 1.0)
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_action_endpoints_map_to_env_bounds(env_id):
    env = make_single_env(env_id)
    raw = env.unwrapped.action_space
    rescale = _find_rescale(env)
    ones = np.ones(raw.shape, np.float32)
    np.testing.assert_allclose(rescale.action(-ones), raw.low, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rescale.action(ones), raw.high, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rescale.action(0 * ones), (raw.low + raw.high) / 2, atol=1e-6)
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_reset_and_steps_are_deterministic_given_seed(env_id):
    def rollout(seed):
        driver = Driver(make_env(env_id, num_envs=2, seed=seed))
        obs = [driver.reset(seed=seed)]
        actions = np.random.default_rng(0).uniform(-1, 1, (3, 2, driver.act_dim))
        for action in actions:
            step = driver.step(action)
            assert step.obs.shape == (2, driver.obs_dim) and step.obs.dtype == np.float32
            assert step.next_obs.shape == (2, driver.obs_dim)
            assert step.next_obs.dtype == np.float32
            assert step.action.shape == (2, driver.act_dim)
            assert step.reward.shape == step.terminated.shape == step.first.shape == (2,)
            obs.append(step.next_obs)
        driver.env.close()
        return np.stack(obs)

    a, b, c = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0, 0], a[0, 1])  # env i is seeded with seed + i


def test_unknown_id_is_one_line_with_suggestion():
    with pytest.raises(EnvError) as info:
        make_env("Halfcheetah-v5", seed=0)
    msg = str(info.value)
    assert "\n" not in msg and "unknown environment id" in msg and "HalfCheetah-v5" in msg


@pytest.mark.parametrize(
    "env_id, needle",
    [
        ("CartPole-v1", "action space must be a continuous Box"),
        ("worldmodel-test/ImageObs-v0", "1-D"),
        ("worldmodel-test/UnboundedAction-v0", "finite"),
        ("not an id", "cannot make"),
    ],
)
def test_unsupported_envs_raise_one_line_env_error(env_id, needle):
    with pytest.raises(EnvError) as info:
        make_env(env_id, seed=0)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_mujoco_gives_install_hint(monkeypatch):
    def fail(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("No module named 'mujoco'")

    monkeypatch.setattr(envs.factory.gym, "make", fail)
    monkeypatch.setattr(envs.factory, "_has_module", lambda name: False)
    with pytest.raises(EnvError, match=r'pip install "gymnasium\[mujoco\]"'):
        make_env("Hopper-v5", seed=0)


@pytest.mark.parametrize("kwargs", [{"num_envs": 0}, {"action_repeat": 0}])
def test_bad_counts_raise_env_error(kwargs):
    with pytest.raises(EnvError):
        make_env(DUMMY_ENV_ID, seed=0, **kwargs)


def test_env_spec_and_max_episode_steps_override():
    assert env_spec(DUMMY_ENV_ID) == {"obs_dim": 3, "act_dim": 1, "max_episode_steps": 50}
    assert env_spec("Hopper-v5", max_episode_steps=7)["max_episode_steps"] == 7

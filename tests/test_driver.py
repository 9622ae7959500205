"""Driver tests on the dummy point mass: termination vs truncation, true final obs, counters."""

import gymnasium as gym
import numpy as np
import pytest

from envs import DUMMY_ENV_ID, Driver, make_env
from envs.dummy import PointMassEnv
from worldmodel.errors import EnvError


class _NaNEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.full(2, np.nan, np.float32), 0.0, False, False, {}


if "worldmodel-test/NaN-v0" not in gym.registry:
    gym.register(id="worldmodel-test/NaN-v0", entry_point=_NaNEnv, disable_env_checker=True)


def _reference(seed, force, steps):
    """Unwrapped point mass: (final obs, summed reward) after `steps` raw steps of `force`."""
    env = PointMassEnv()
    env.reset(seed=seed)
    total = 0.0
    for _ in range(steps):
        obs, reward, *_ = env.step(np.array([force]))
        total += reward
    return obs, total


def _run_until_done(driver, action):
    for t in range(1000):
        step = driver.step(action)
        if step.first.any():
            return t + 1, step
    raise AssertionError("episode never ended")


def test_termination_gives_true_final_obs():
    driver = Driver(make_env(DUMMY_ENV_ID, seed=5))
    driver.reset(seed=5)
    steps, step = _run_until_done(driver, np.ones((1, 1)))  # +1 -> force +2 (max)
    assert steps < 50
    assert step.terminated.tolist() == [True] and step.truncated.tolist() == [False]
    final, total = _reference(5, 2.0, steps)
    np.testing.assert_allclose(step.next_obs[0], final, rtol=1e-6)
    assert abs(step.next_obs[0, 0]) > PointMassEnv.BOUND
    reset_obs = driver.obs[0]
    assert abs(reset_obs[0]) <= 0.5 and reset_obs[1] == 0.0  # a reset obs, not the final
    assert driver.first.tolist() == [True]
    assert step.episodes == [{"return": pytest.approx(total, rel=1e-5), "length": steps}]
    assert not driver.step(np.zeros((1, 1))).first.any()
    assert driver.first.tolist() == [False]


def test_time_limit_gives_truncation_not_termination():
    driver = Driver(make_env(DUMMY_ENV_ID, seed=2))
    driver.reset(seed=2)
    steps, step = _run_until_done(driver, np.zeros((1, 1)))
    assert steps == 50
    assert step.truncated.tolist() == [True] and step.terminated.tolist() == [False]
    final, _ = _reference(2, 0.0, 50)
    np.testing.assert_allclose(step.next_obs[0], final, rtol=1e-6)
    assert not np.array_equal(step.next_obs, driver.obs)
    assert driver.env_steps == 50


def test_three_envs_end_independently():
    driver = Driver(make_env(DUMMY_ENV_ID, num_envs=3, seed=0))
    obs = driver.reset(seed=10)
    assert obs.shape == (3, 3) and driver.first.all()
    action = np.array([[1.0], [0.0], [-1.0]])
    returns, ended = np.zeros(3), {}
    for t in range(50):
        step = driver.step(action)
        np.testing.assert_array_equal(step.obs, obs)
        returns += step.reward
        for i in np.flatnonzero(step.first):
            ended.setdefault(int(i), (t + 1, returns[i], step))
        obs = driver.obs
    assert set(ended) == {0, 1, 2}
    for i, force in enumerate([2.0, 0.0, -2.0]):
        steps, ret, step = ended[i]
        final, total = _reference(10 + i, force, steps)  # env i is seeded with seed + i
        np.testing.assert_allclose(step.next_obs[i], final, rtol=1e-6)
        assert ret == pytest.approx(total, rel=1e-5)
        assert step.terminated[i] == (force != 0.0) and step.truncated[i] == (force == 0.0)
        assert {"return": pytest.approx(total, rel=1e-5), "length": steps} in step.episodes
    assert ended[1][0] == 50 and driver.env_steps == 3 * 50  # summed over envs


def test_action_repeat_counts_raw_steps():
    driver = Driver(make_env(DUMMY_ENV_ID, seed=1, action_repeat=3))
    driver.reset(seed=1)
    steps, step = _run_until_done(driver, np.zeros((1, 1)))
    assert steps == 17  # 16 * 3 + 2 = 50 raw steps, the last decision cut short
    assert step.truncated.tolist() == [True]
    assert driver.env_steps == 50
    final, total = _reference(1, 0.0, 50)
    np.testing.assert_allclose(step.next_obs[0], final, rtol=1e-6)
    assert step.episodes == [{"return": pytest.approx(total, rel=1e-5), "length": 50}]


def test_rejects_bad_actions_and_clips_to_unit_box():
    driver = Driver(make_env(DUMMY_ENV_ID, num_envs=2, seed=0))
    with pytest.raises(RuntimeError):
        driver.step(np.zeros((2, 1)))
    driver.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        driver.step(np.zeros((2,)))
    with pytest.raises(ValueError, match="non-finite"):
        driver.step(np.array([[0.0], [np.nan]]))
    assert driver.step(np.array([[3.0], [-3.0]])).action.tolist() == [[1.0], [-1.0]]


def test_non_finite_observation_names_the_env():
    driver = Driver(make_env("worldmodel-test/NaN-v0", seed=0))
    driver.reset(seed=0)
    with pytest.raises(EnvError, match="worldmodel-test/NaN-v0"):
        driver.step(np.zeros((1, 1)))

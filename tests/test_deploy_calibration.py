"""Before deployment (scripts.continual) the gate and the change detector are calibrated on fresh
greedy episodes: how many is `continual.deploy_episodes`, at least `change.min_episodes`; the
latter alone sets what a new world needs before the detector re-arms (agents.continual)."""

from types import SimpleNamespace

import numpy as np
import pytest

from agents.replay import Replay
from scripts import benchmark_ood
from scripts.continual import _calibrate_before_deployment
from worldmodel.config import load_config

STEPS = 4  # transitions per fake episode


def _fake_collect(agent, state, env_id, *, episodes, seed, max_steps, plan, shift=None):
    T = episodes * STEPS
    return {
        "obs": np.zeros((T, 2), np.float32),
        "action": np.zeros((T, 1), np.float32),
        "next_obs": np.zeros((T, 2), np.float32),
        "terminated": np.zeros(T, bool),
        "first": np.tile(np.arange(STEPS) == 0, episodes),
        "t": np.tile(np.arange(STEPS), episodes),
        "returns": np.zeros(episodes),
    }


class _Calibrator:
    def min_holdout(self):
        return 0  # the bias test's need is not what this test is about

    def recalibrate(self, params, replay, rng, since=0):
        return {"held": replay.held}


@pytest.mark.parametrize(
    "deploy, min_eps, score, episodes",
    [
        (20, 20, "either", 40),  # bias kinds: every other held-out episode is the reference
        (20, 10, "either", 40),  # a lower arming threshold no longer halves this calibration
        (10, 20, "either", 40),  # never fewer than the detector needs to be armed
        (20, 10, "max", 20),  # plain scores: every held-out episode is the reference
        (0, 0, "max", 0),
    ],
)
def test_deploy_episodes_set_the_calibration_before_deployment(
    monkeypatch, deploy, min_eps, score, episodes
):
    monkeypatch.setattr(benchmark_ood, "collect", _fake_collect)
    cfg = load_config(
        ["debug", f"continual.deploy_episodes={deploy}", f"change.min_episodes={min_eps}"]
    )
    agent = SimpleNamespace(abstain_cfg=SimpleNamespace(score=score))
    replay = Replay(10_000, 2, 1, 1)
    _calibrate_before_deployment(agent, SimpleNamespace(params=None), cfg, replay, _Calibrator())
    assert replay.held == episodes * STEPS  # batches of 10 episodes, all held out


def test_deploy_episodes_must_not_be_negative():
    from agents.continual import ContinualConfig
    from worldmodel.errors import ConfigError

    with pytest.raises(ConfigError, match="continual.deploy_episodes"):
        ContinualConfig(deploy_episodes=-1)

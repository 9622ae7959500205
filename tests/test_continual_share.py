"""The new world's batch share after an alarm (agents.continual.new_world_share) and the config
checks that guard it."""

import pytest

from agents.continual import ContinualConfig, new_world_share
from worldmodel.errors import ConfigError


def test_share_ramps_linearly_to_the_mode_full_share():
    cc = ContinualConfig(new_share=0.5, ramp=500)
    # adaptive: new_share, reached after `ramp` new transitions
    assert new_world_share("adaptive", cc, 0) == 0.0
    assert new_world_share("adaptive", cc, 100) == pytest.approx(0.1)
    assert new_world_share("adaptive", cc, 250) == pytest.approx(0.25)
    assert new_world_share("adaptive", cc, 500) == pytest.approx(0.5)
    assert new_world_share("adaptive", cc, 5000) == pytest.approx(0.5)
    # naive fine-tunes on the new world alone, once ramped
    assert new_world_share("naive", cc, 125) == pytest.approx(0.25)
    assert new_world_share("naive", cc, 800) == 1.0


def test_ramp_zero_gives_the_full_share_at_once():
    cc = ContinualConfig(new_share=0.3, ramp=0)
    assert new_world_share("adaptive", cc, 0) == pytest.approx(0.3)
    assert new_world_share("naive", cc, 1) == 1.0


@pytest.mark.parametrize("bad", [{"ramp": -1}, {"new_share": 1.5}])
def test_bad_continual_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="continual\\."):
        ContinualConfig(**bad)

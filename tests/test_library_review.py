"""agents.library's review: after a new world's model has learnt, it and the stored model it was
copied from each act, and the one whose episodes returned more is kept (no model needed: the
review moves states and reads returns only)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from agents.library import Library


class _Replay:
    added = 0


def _state(value):
    return {"w": jnp.full((3,), float(value))}


@pytest.mark.parametrize(
    ("learnt_returns", "source_returns", "kept"),
    [
        ([100.0, 200.0], [300.0], "source"),
        ([300.0], [100.0, 250.0], "learnt"),
        ([150.0], [150.0], "learnt"),
    ],  # fmt: skip
)
def test_review_keeps_the_model_whose_episodes_returned_more(learnt_returns, source_returns, kept):
    lib = Library(_state(1), None, ("ref",), "original")  # the gate is not read
    lib.record = {}
    lib._new_world("mass 2")  # learnt from world 0 (as on_alarm / probe_step do)
    assert (lib.forked_from, lib.current) == (0, 1)
    learnt = _state(2)
    source = lib.start_review(learnt, 10)  # the source acts first: a copy of world 0's model
    assert float(source.state["w"][0]) == 1.0 and source.reference == ("ref",)
    assert source.state["w"] is not lib.worlds[0].state["w"]  # the stored one survives donation
    replay = _Replay()

    def step(n, *, end, returns=()):
        replay.added += n
        return lib.review_step(replay, episode_end=end, returns=returns)

    assert step(4, end=False) is None  # the episode under way began with the learnt model
    assert step(3, end=True, returns=[999.0]) is None  # ... its return does not count
    assert step(6, end=True, returns=source_returns[:1]) is None  # 6 < 10 transitions
    assert step(5, end=False) is None  # 11, but mid-episode
    stage, state = step(1, end=True, returns=source_returns[1:])
    assert stage == "learnt" and float(state["w"][0]) == 2.0  # its turn
    assert step(9, end=True, returns=learnt_returns[:1]) is None  # counted anew
    stage, world = step(12, end=True, returns=learnt_returns[1:])
    assert stage == "kept"
    if kept == "learnt":
        assert world is None  # the learnt model stays deployed
    else:
        assert float(world.state["w"][0]) == 1.0 and world.state["w"] is not source.state["w"]
    assert lib.record["review"] == {
        "source": 0, "kept": kept,
        "returns": {"learnt": np.mean(learnt_returns), "source": np.mean(source_returns)},
    }  # fmt: skip
    assert lib.review is None and lib.forked_from is None and lib.current == 1


def test_a_source_that_copes_is_kept_as_it_is():
    """continual.keep_within: no learning where the source's episodes in the new world return at
    least its own world's level minus that share of its magnitude."""
    lib = Library(_state(1), None, ("ref",), "original")
    lib.record = {}
    lib.set_level([])  # no episodes: still unknown
    lib._new_world("mass 2")
    assert not lib.copes([1e9], within=0.1)  # its level is not known yet: learn
    lib.current = 0
    lib.set_level([310.0, 300.0, -50.0, 290.0])  # the median: one failed episode does not count
    lib.current = 1
    assert lib.worlds[0].level == 295.0 and lib.copes([266.0], within=0.1)
    lib.worlds[0] = dataclasses.replace(lib.worlds[0], level=300.0)
    assert lib.copes([280.0, 262.0], within=0.1)  # mean 271 >= 270
    assert not lib.copes([269.0], within=0.1)
    assert not lib.copes([], within=0.1) and not lib.copes([999.0], within=-1.0)
    lib.worlds[0] = dataclasses.replace(lib.worlds[0], level=-100.0)
    assert lib.copes([-109.0], within=0.1) and not lib.copes([-111.0], within=0.1)
    world = lib.keep_as_is()
    assert float(world.state["w"][0]) == 1.0 and world.state["w"] is not lib.worlds[0].state["w"]
    assert lib.record["kept_as_is"] == 0 and lib.forked_from is None and lib.current == 1

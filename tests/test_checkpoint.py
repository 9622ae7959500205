"""Checkpointer: bit-identical state round trip, same next update, replay, pruning, errors."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from worldmodel.checkpoint import Checkpointer
from worldmodel.errors import CheckpointError


@struct.dataclass
class _State:
    params: dict
    opt_state: optax.OptState
    step: jax.Array
    key: jax.Array
    lr: float = struct.field(pytree_node=False, default=1e-3)


def _tx():
    return optax.adam(1e-3)


def _loss(params, x):
    h = jnp.tanh(x @ params["dense"]["w"] + params["dense"]["b"])
    return jnp.mean((h @ params["out"]["w"]) ** 2)


def _update(state, x):
    grads = jax.grad(_loss)(state.params, x)
    updates, opt_state = _tx().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1)


def _make_state(seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = {
        "dense": {"w": jax.random.normal(k1, (4, 8)), "b": jnp.zeros(8, jnp.bfloat16)},
        "out": {"w": jax.random.normal(k2, (8, 2))},
    }
    state = _State(params, _tx().init(params), jnp.zeros((), jnp.int32), k3)
    return _update(state, jnp.ones((3, 4)))  # non-trivial adam moments and count


def _replay(n=10):
    rng = np.random.default_rng(0)
    return {
        "obs": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "terminated": rng.uniform(size=n) < 0.1,
        "cursor": np.array(n, np.int64),
    }


def _leaves(tree):
    def raw(x):
        is_key = isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(x) if is_key else x)

    return [raw(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_round_trip_is_bit_identical_and_next_update_matches(tmp_path):
    state, replay, meta = _make_state(0), _replay(), {"env_steps": 123, "note": "x"}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(5, state=state, replay=replay, meta=meta)
        assert ckpt.latest_step() == 5
    # A fresh Checkpointer (as after a restart), restoring into a differently seeded template.
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        restored, replay2, meta2 = ckpt.restore(_make_state(1))
    _assert_identical(restored, state)
    assert isinstance(restored.key, jax.Array) and restored.lr == state.lr
    assert meta2 == meta
    assert replay2.keys() == replay.keys()
    for name, array in replay.items():
        assert replay2[name].dtype == array.dtype
        np.testing.assert_array_equal(replay2[name], array)
    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    _assert_identical(_update(restored, x), _update(state, x))


def test_keep_prunes_old_steps_and_their_replay(tmp_path):
    state = _make_state(0)
    with Checkpointer(tmp_path, keep=2) as ckpt:
        assert ckpt.latest_step() is None
        for step in (1, 2, 3):
            ckpt.save(step, state=state, replay=_replay(step), meta={"step": step})
        assert ckpt.all_steps() == [2, 3]
        assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == [
            "2.npz",
            "3.npz",
        ]
        _, replay, meta = ckpt.restore(state, step=2)
        assert meta == {"step": 2} and len(replay["obs"]) == 2
        with pytest.raises(CheckpointError, match="step 1 .*steps: 2, 3"):
            ckpt.restore(state, step=1)
        with pytest.raises(CheckpointError, match="already exists"):
            ckpt.save(3, state=state, replay={}, meta={})


def test_missing_directory_raises_and_is_not_created(tmp_path):
    ckpt = Checkpointer(tmp_path / "nope")
    assert ckpt.latest_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        ckpt.restore(_make_state(0))
    assert not (tmp_path / "nope").exists()


def test_truncated_replay_is_reported(tmp_path):
    state = _make_state(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state=state, replay=_replay(), meta={})
    path = tmp_path / "replay" / "1.npz"
    path.write_bytes(path.read_bytes()[:-20])
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError) as excinfo:
        ckpt.restore(state)
    assert "truncated" in str(excinfo.value) and "\n" not in str(excinfo.value)
    path.unlink()
    with (
        Checkpointer(tmp_path) as ckpt,
        pytest.raises(CheckpointError, match="missing"),
    ):
        ckpt.restore(state)


def test_template_mismatch_names_the_leaf(tmp_path):
    state = _make_state(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state=state, replay={}, meta={})
        wider = state.replace(params={**state.params, "out": {"w": jnp.zeros((8, 3))}})
        with pytest.raises(CheckpointError) as excinfo:
            ckpt.restore(wider)
        message = str(excinfo.value)
        assert ".params['out']['w'] is float32[8, 2] there, float32[8, 3]" in message
        # A dtype change is reported, not silently cast.
        cast = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), state.params)
        with pytest.raises(CheckpointError, match=r"\['dense'\]\['w'\] is float32"):
            ckpt.restore(state.replace(params=cast))
        with pytest.raises(CheckpointError, match="missing from the checkpoint"):
            ckpt.restore(state.replace(params={**state.params, "extra": jnp.zeros(2)}))


def test_corrupt_state_is_reported(tmp_path):
    state = _make_state(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state=state, replay={}, meta={})
    shutil.rmtree(tmp_path / "1" / "state")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError) as excinfo:
        ckpt.restore(state)
    assert "corrupt" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_uncommitted_step_is_ignored(tmp_path):
    """A save interrupted before orbax's commit leaves a temp dir; it is never restored."""
    state = _make_state(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state=state, replay=_replay(), meta={"step": 1})
    (tmp_path / "2.orbax-checkpoint-tmp-0").mkdir()
    (tmp_path / "replay" / "2.npz").write_bytes(b"partial")
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        assert ckpt.restore(state)[2] == {"step": 1}

"""Resume after any kill: corrupt checkpoints fall back to the previous good one with a one-line
warning, a resumed run equals the uninterrupted one bit for bit, SIGTERM saves and exits 0."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodel.checkpoint import Checkpointer
from worldmodel.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _state(seed):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32), "step": jnp.asarray(seed)}


def _replay(seed):
    return {"obs": np.random.default_rng(seed).normal(size=(50, 3)).astype(np.float32)}


def _two_checkpoints(directory):
    with Checkpointer(directory, keep=3) as ckpt:
        for step in (1, 2):
            ckpt.save(step, state=_state(step), replay=_replay(step), meta={"step": step})


def _flip(path: Path, offset: int | None = None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate_replay", "flip_replay", "flip_state", "manifest"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, damage):
    _two_checkpoints(tmp_path)
    npz = tmp_path / "replay" / "2.npz"
    if damage == "truncate_replay":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "flip_replay":
        _flip(npz)
    elif damage == "flip_state":
        _flip(_largest_file(tmp_path / "2" / "state"))
    else:
        (tmp_path / "2" / "manifest" / "metadata").write_text("{not json")
    warnings = []
    with Checkpointer(tmp_path, keep=3) as ckpt:
        with pytest.raises(CheckpointError) as excinfo:
            ckpt.restore(_state(0))  # the plain restore reports it
        step, state, replay, meta = ckpt.restore_latest(_state(0), warn=warnings.append)
    message = str(excinfo.value)
    assert "\n" not in message and "step 2" in message
    if "replay" in damage:
        assert str(npz) in message  # names the file
    assert step == 1 and meta == {"step": 1} and int(state["step"]) == 1
    np.testing.assert_array_equal(replay["obs"], _replay(1)["obs"])
    assert len(warnings) == 1 and "step 2" in warnings[0] and "\n" not in warnings[0]
    # The bad one is moved aside, so a new save of step 2 is possible.
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "corrupt").iterdir()) == ["2", "2"]
    with Checkpointer(tmp_path, keep=3) as ckpt:
        assert ckpt.all_steps() == [1]
        ckpt.save(2, state=_state(2), replay=_replay(2), meta={"step": 2})
        assert ckpt.restore_latest(_state(0), warn=warnings.append)[0] == 2


def test_every_checkpoint_corrupt_is_one_error(tmp_path):
    _two_checkpoints(tmp_path)
    for step in (1, 2):
        _flip(tmp_path / "replay" / f"{step}.npz")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match="every checkpoint"):
        ckpt.restore_latest(_state(0), warn=lambda m: None)


def test_step_without_commit_marker_is_ignored(tmp_path):
    _two_checkpoints(tmp_path)
    (tmp_path / "2" / "commit_success.txt").unlink()
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [1]
        assert ckpt.restore_latest(_state(0), warn=pytest.fail)[0] == 1


def _records(records):
    return {
        r["env_step"]: {k: v for k, v in r.items() if k not in ("sps",)}
        for r in records
        if r["kind"] == "train"
    }


def _run(run_dir, stop_after=None):
    """Train the debug config in-process; stop right after checkpoint `stop_after`."""
    from agents.trainer import train
    from worldmodel.config import load_config

    overrides = ["train.steps=200", "checkpoint.every=50", "eval.every=0", "log.every=25"]
    cfg = load_config(["debug", f"run_dir={run_dir}", *overrides])
    records, flag = [], []

    def emit(kind, step, data):
        records.append({"kind": kind, "env_step": step, **data})
        if kind == "checkpoint" and step == stop_after:
            flag.append(True)

    train(cfg, Path(run_dir), emit=emit, should_stop=lambda: bool(flag))
    return records


def test_resumed_run_equals_uninterrupted(tmp_path):
    whole = _run(tmp_path / "whole")
    part = _run(tmp_path / "part", stop_after=150)
    assert max(r["env_step"] for r in part if r["kind"] == "train") <= 150
    _flip(tmp_path / "part" / "checkpoints" / "replay" / "150.npz")  # resume falls back to 100
    rest = _run(tmp_path / "part")
    warnings = [r for r in rest if r["kind"] == "warning"]
    assert len(warnings) == 1 and "150.npz" in warnings[0]["message"]
    assert [r for r in rest if r["kind"] == "resume"][0]["env_step"] == 100
    expected = _records(whole)
    assert _records(part + rest) == expected and len(expected) >= 4
    whole_ckpt = Checkpointer(tmp_path / "whole" / "checkpoints")
    with whole_ckpt as a, Checkpointer(tmp_path / "part" / "checkpoints") as b:
        assert a.manifest(200)["digest"] == b.manifest(200)["digest"]
        assert a.manifest(200)["replay"] == b.manifest(200)["replay"]
        assert a.meta(200) == b.meta(200)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    env = dict(os.environ)
    if cache := jax.config.jax_compilation_cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    args = ["debug", f"run_dir={tmp_path}", "train.steps=1000000", "checkpoint.every=0"]
    cmd = [sys.executable, "-m", "scripts.train", *args, "eval.every=0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and '"train"' in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "stopped by SIGTERM" in out.decode() and "Traceback" not in err.decode()
    last = [json.loads(line) for line in metrics.read_text().splitlines()][-1]
    assert last["kind"] == "checkpoint"
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [last["env_step"]]
        assert ckpt.meta(last["env_step"])["env_steps"] == last["env_step"] < 1000000

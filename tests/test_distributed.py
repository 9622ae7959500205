"""Multi-host code path: launcher detection (pure); two local processes joined through
jax.distributed on 127.0.0.1 doing an all-reduce and a data-parallel sharded sum; and
`scripts.train` run as two processes: one set of logs, identical params, per-process replays,
and a resume that gives each process its own replay back."""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from scripts.runtime import free_port
from worldmodel.distributed import detect

ROOT = Path(__file__).resolve().parents[1]


def test_detect():
    assert detect({}) is None
    assert detect({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert detect({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}) == ("slurm", {})
    assert detect({"TPU_WORKER_HOSTNAMES": "a,b", "TPU_WORKER_ID": "1"}) == ("tpu", {})
    explicit = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert detect(explicit) == (
        "explicit",
        {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1},
    )


WORKER = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from worldmodel.distributed import init_distributed, is_main_process, process_key
from worldmodel.sharding import make_mesh

assert init_distributed(timeout_s=60) == "explicit"
assert jax.process_count() == 2 and len(jax.devices()) == 2
total = multihost_utils.process_allgather(jnp.asarray(jax.process_index() + 1)).sum()
mesh = make_mesh(data=2)
local = np.full((4, 3), jax.process_index() + 1.0, np.float32)  # this host's half of the batch
x = multihost_utils.host_local_array_to_global_array(local, mesh, P("data"))
s = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))(x)
k = jax.random.key_data(process_key(jax.random.key(0)))
keys = multihost_utils.process_allgather(k)
print(f"proc {jax.process_index()} main={is_main_process()} total={int(total)} "
      f"sum={float(s)} keys_differ={bool((keys[0] != keys[1]).any())}", flush=True)
multihost_utils.sync_global_devices("done")
"""


def test_two_local_processes_all_reduce():
    port = free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
        env.update(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu")
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
        cmd = [sys.executable, "-c", WORKER]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=150)
            outs.append((p.returncode, out, err[-2000:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (rc, out, err) in enumerate(outs):
        assert rc == 0, err
        assert f"proc {i} main={i == 0} total=3 sum=36.0 keys_differ=True" in out, out + err


# Small enough for a loaded 2-core box: 40 updates (each a gloo all-reduce over TCP), the policy
# prior instead of the planner (one cheap act compile), one checkpoint mid-way and at the end.
TRAIN = ["debug", "train.seed_steps=10", "checkpoint.every=20", "eval.every=40", "log.every=10"]
TRAIN += ["eval.episodes=1", "train.plan=false", "eval.plan=false"]


def _train_two(run_dir: Path, steps: int, timeout: float = 300) -> list[tuple[int, str, str]]:
    """Run `scripts.train` as processes 0 and 1 of one job; [(returncode, stdout, stderr)]."""
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}")
    env.update(JAX_NUM_PROCESSES="2", JAX_PLATFORMS="cpu")
    # compile-bound: process 1 never reads the compilation cache (its keys are per process)
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    if cache := jax.config.jax_compilation_cache_dir:  # process 0 reuses the session's cache
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cmd = [sys.executable, "-m", "scripts.train", *TRAIN]
    cmd += [f"train.steps={steps}", f"run_dir={run_dir}"]
    logs = [run_dir.parent / f"p{i}-{steps}.{k}" for i in range(2) for k in ("out", "err")]
    procs = []
    with contextlib.ExitStack() as files:
        out0, err0, out1, err1 = (files.enter_context(open(f, "w")) for f in logs)
        try:  # files, not pipes: a full pipe would block one process inside a collective
            for i, (out, err) in enumerate([(out0, err0), (out1, err1)]):
                procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err,
                                              env=env | {"JAX_PROCESS_ID": str(i)}))  # fmt: skip
            deadline = time.monotonic() + timeout
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    text = [f.read_text() for f in logs]
    return [(p.returncode, text[2 * i], text[2 * i + 1][-3000:]) for i, p in enumerate(procs)]


def _check_ok(results):
    for i, (rc, out, err) in enumerate(results):
        assert rc == 0, f"process {i}: {out[-1000:]}{err}"
    assert "run folder:" in results[0][1] and "run folder:" not in results[1][1]


def _replay(run_dir: Path, process: int, step: int) -> dict:
    folder = run_dir / "checkpoints" / "replay" / (f"p{process}" if process else "")
    with np.load(folder / f"{step}.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _manifest(run_dir: Path, step: int) -> dict:
    return json.loads((run_dir / "checkpoints" / str(step) / "manifest" / "metadata").read_text())


def test_train_two_processes_and_resume(tmp_path):
    run = tmp_path / "run"
    _check_ok(_train_two(run, 40))
    assert not list(run.glob("config-*.yaml")) and (run / "config.yaml").is_file()
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [e["env_step"] for e in events if e["kind"] == "train"]
    assert train_steps == [10, 20, 30, 40]  # one writer (process 0), not two
    assert [e["env_step"] for e in events if e["kind"] == "eval"] == [40]
    manifest = _manifest(run, 40)
    hosts = manifest["hosts"]
    # Params and optimizer state identical on both processes after the last update:
    assert hosts[0]["state"] == hosts[1]["state"] == manifest["digest"]["state"] is not None
    assert hosts[0]["replay"]["sha256"] != hosts[1]["replay"]["sha256"]
    first = [_replay(run, i, 40) for i in range(2)]
    assert all(int(r["size"]) == 40 for r in first)
    assert not np.array_equal(first[0]["obs"][:, :40], first[1]["obs"][:, :40])  # own data

    _check_ok(_train_two(run, 50))  # resumes both
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["env_step"] for e in events if e["kind"] == "resume"] == [40]
    manifest = _manifest(run, 50)
    assert manifest["hosts"][0]["state"] == manifest["hosts"][1]["state"]
    for i in range(2):  # each process got its own replay back and kept adding to it
        later = _replay(run, i, 50)
        assert int(later["size"]) == 50
        np.testing.assert_array_equal(later["obs"][:, :40], first[i]["obs"][:, :40])
        assert json.loads(str(later["__meta__"]))["env_steps"] == 50

"""Multi-host code path: launcher detection (pure), and two local processes joined through
jax.distributed on 127.0.0.1 doing an all-reduce and a data-parallel sharded sum."""

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_local_processes_all_reduce():
    port = _free_port()
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

"""Multi-host setup: start `jax.distributed` from the launcher's environment, name the main process.

`init_distributed()` must run before any other JAX call. It recognises SLURM (several tasks in
the step: SLURM_NTASKS > 1; JAX reads SLURM_PROCID, SLURM_STEP_NODELIST, ...), Cloud TPU VMs
(TPU_WORKER_HOSTNAMES / TPU_ACCELERATOR_TYPE with several workers; JAX reads the metadata
server) and an explicit setup (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
and does nothing for a single process. `is_main_process()` gates logs and files;
`process_key(key)` folds the process index into a key so hosts draw different samples;
`allgather_json` and `any_process` let hosts agree on host-side values (every process must call
them at the same point; with one process they return at once, with no collective).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from worldmodel.errors import UserError


class DistributedError(UserError):
    """The multi-host environment is incomplete or the coordinator cannot be reached."""


def detect(environ: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
    """(cluster kind, kwargs for jax.distributed.initialize) or None for a single process."""
    env = os.environ if environ is None else environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        try:
            kwargs = {
                "coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                "num_processes": int(env["JAX_NUM_PROCESSES"]),
                "process_id": int(env["JAX_PROCESS_ID"]),
            }
        except (KeyError, ValueError) as e:
            raise DistributedError(
                "JAX_COORDINATOR_ADDRESS needs integer JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                f"({type(e).__name__}: {e})"
            ) from e
        return "explicit", kwargs
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return "slurm", {}  # jax's SlurmCluster reads the rest
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or ("TPU_ACCELERATOR_TYPE" in env and "TPU_WORKER_ID" in env):
        return "tpu", {}  # jax's GceTpuCluster reads the metadata server
    return None


def init_distributed(*, timeout_s: int = 300) -> str | None:
    """Initialise jax.distributed when launched as several processes; returns the kind or None.

    Raises DistributedError (one line) when the coordinator cannot be reached in `timeout_s`.
    """
    found = detect()
    if found is None:
        return None
    kind, kwargs = found
    # JAX's preemption service would take over SIGTERM in C++, so the trainer's stop flag (agreed
    # across processes each iteration, agents.trainer) would never see it.
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(initialization_timeout=timeout_s, **kwargs)
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError subclasses RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"jax.distributed.initialize ({kind}) failed: {first}") from e
    return kind


def is_main_process() -> bool:
    """True on process 0 (the one that writes logs, config and exports)."""
    return jax.process_index() == 0


def process_key(key: jax.Array) -> jax.Array:
    """`key` folded with this process's index (per-host sampling, e.g. env seeds, replay)."""
    return jax.random.fold_in(key, jax.process_index())


def allgather_json(value: Any) -> list:
    """[value of process 0, value of process 1, ...] for a JSON-serialisable `value` (host)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32)).ravel()
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, sizes, strict=True)]


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (e.g. a stop signal seen by one host)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(np.asarray([bool(flag)])).any())

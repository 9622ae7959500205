"""Data/model-parallel placement for the jitted update: a device mesh from the `mesh` config.

The mesh has axes ("data", "model") of sizes `mesh.data` x `mesh.model` (default 1 x 1: the same
code path on one device). Batches are split on "data" along their leading (B) axis, the train
state is replicated, and optionally the leaves of ensemble parameters (leading axis K, e.g.
`params['dynamics']` and its optimizer moments) are split on "model". `jit` follows the
placement of its inputs. With "data" > 1 the update's gradient steps run under
`data_parallel` (a shard_map over "data"; "model" stays automatic): one packed all-reduce per
gradient step, because XLA's own all-reduce of many leaves costs one round trip per leaf on the
CPU (gloo) backend, 83 of them per update. On CPU, collectives over virtual devices can stall
without a sync each step (see shared/machine-facts.md), so `make_sharded_update` blocks on every multi-device step.

Several processes (jax.distributed): the mesh spans the devices of all processes (`mesh.data`
counts them all; each process gives the same number, whole rows of the grid), each process
passes its own rows of the batch (B / processes) and gets the global batch back, and
`local_replica` gives a process its own copy of the replicated state for acting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from worldmodel.errors import ConfigError

ENSEMBLE_KEYS = ("dynamics",)  # params entries whose leaves are stacked over ensemble heads


def make_mesh(*, data: int = 1, model: int = 1, devices: Sequence | None = None) -> Mesh:
    """Mesh of shape (data, model) over the first data*model of `devices` (default: all; with
    several processes, the first data*model / processes local devices of each process, so each
    process holds whole rows and its own rows of the batch)."""
    if data < 1 or model < 1:
        raise ConfigError(f"mesh.data and mesh.model must be >= 1, got {data} x {model}")
    if devices is None and jax.process_count() > 1:
        devices = _per_process_devices(data, model)
    devices = list(jax.devices() if devices is None else devices)
    if data * model > len(devices):
        raise ConfigError(
            f"mesh {data} x {model} needs {data * model} devices, {len(devices)} available"
        )
    grid = np.asarray(devices[: data * model], dtype=object).reshape(data, model)
    return Mesh(grid, ("data", "model"))


def _per_process_devices(data: int, model: int) -> list:
    """The first data*model / P local devices of each of the P processes, in process order."""
    count = jax.process_count()
    if data % count:
        raise ConfigError(
            f"mesh.data={data} must be a multiple of the number of processes ({count}): "
            "each process gives the same number of devices to the data axis"
        )
    per = data * model // count
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    fewest = min(len(ds) for ds in by_process.values())
    if per > fewest:
        raise ConfigError(
            f"mesh {data} x {model} needs {per} devices per process, {fewest} available"
        )
    return [d for p in sorted(by_process) for d in by_process[p][:per]]


def _is_ensemble(path, leaf, model: int) -> bool:
    keys = {getattr(k, "key", None) for k in path}
    shape = getattr(leaf, "shape", ())
    return bool(keys & set(ENSEMBLE_KEYS)) and len(shape) >= 1 and shape[0] % model == 0


def place_state(state: Any, mesh: Mesh, *, shard_ensemble: bool = False) -> Any:
    """`state` replicated over the mesh; with shard_ensemble, ensemble leaves (K, ...) are split
    on "model" (K must be divisible by the model axis size, else that leaf stays replicated)."""
    model = mesh.shape["model"]

    def put(path, leaf):
        split = shard_ensemble and model > 1 and _is_ensemble(path, leaf, model)
        return jax.device_put(leaf, NamedSharding(mesh, P("model") if split else P()))

    return jax.tree_util.tree_map_with_path(put, state)


def place_batch(batch: dict, mesh: Mesh) -> dict:
    """Every array (B, ...) of `batch` split on "data" along B (B divisible by mesh.data).

    With several processes, `batch` holds this process's rows (B / processes, ...) and the
    result is the global batch (B, ...), rows ordered by process.
    """
    data = mesh.shape["data"]
    if jax.process_count() > 1:
        local = data // jax.process_count()  # this process's devices on the data axis
        for x in jax.tree.leaves(batch):
            if np.shape(x)[0] % local:
                raise ConfigError(
                    f"per-process batch size {np.shape(x)[0]} is not divisible by this "
                    f"process's {local} data devices"
                )
        return multihost_utils.host_local_array_to_global_array(batch, mesh, P("data"))
    sharding = NamedSharding(mesh, P("data"))

    def put(x):
        if np.shape(x)[0] % data:
            raise ConfigError(f"batch size {np.shape(x)[0]} is not divisible by mesh.data={data}")
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)


def data_parallel(
    fn: Callable, mesh: Mesh, *, in_specs: tuple, out_specs: tuple, gather: tuple[int, ...] = ()
) -> Callable:
    """`fn` run on each device's rows (a shard_map over "data"), its outputs combined in one
    all-reduce.

    `fn(*args)` returns a tuple: outputs 0 and 1 (pytrees, e.g. gradients and scalar metrics)
    are averaged over the devices; the outputs at the indices in `gather`, per-row arrays
    (b, ...), are concatenated in device order to (n * b, ...); the rest stay split (their
    `out_specs` say how). Averages are exact for losses that are sums over rows divided by the
    global row count (every loss here); a ratio metric (the td_target mean over valid steps)
    becomes the mean of the devices' ratios. All of it travels as one flat float32 buffer.
    """
    n = mesh.shape["data"]
    reduced = (0, 1, *gather)

    def local(*args):
        # Replicated inputs are cast to per-device values, else the gradient with respect to
        # them would be summed over "data" leaf by leaf (the round trips this avoids).
        args = [
            jax.tree.map(lambda x: jax.lax.pcast(x, "data", to="varying"), a) if spec == P() else a
            for a, spec in zip(args, in_specs, strict=True)
        ]
        out = list(fn(*args))
        row = jax.lax.axis_index("data")

        def spread(x):  # own rows in place, zeros elsewhere: the sum is the concatenation
            full = jnp.zeros((n, *x.shape), x.dtype).at[row].set(x)
            return full.reshape(n * x.shape[0], *x.shape[1:])

        packed = [jax.tree.map(lambda x: x / n, out[j]) for j in (0, 1)]
        packed += [jax.tree.map(spread, out[j]) for j in gather]
        flat, unravel = ravel_pytree(packed)
        for j, value in zip(reduced, unravel(jax.lax.psum(flat, "data")), strict=True):
            out[j] = value
        return tuple(out)

    return jax.shard_map(
        local, mesh=mesh, in_specs=in_specs, out_specs=out_specs, axis_names={"data"}
    )


def make_sharded_update(update: Callable, mesh: Mesh) -> Callable:
    """`update(state, batch, *, key) -> (state, metrics)` with the batch placed on `mesh`.

    `state` must already be placed (`place_state`). With more than one device the call blocks
    until the step is done (CPU collective-stall workaround; negligible next to a step).
    """
    multi = mesh.devices.size > 1

    def sharded(state, batch, *, key):
        state, metrics = update(state, place_batch(batch, mesh), key=key)
        if multi:
            jax.block_until_ready(metrics)
        return state, metrics

    return sharded


def local_replica(tree: Any) -> Any:
    """This process's own full copy of a placed `tree`, replicated on a one-device mesh of its
    first local device (for acting and evaluation without cross-process calls). The identity
    with one process. Replicated leaves share their buffers with `tree` (invalid once it is
    donated); leaves split on "model" are gathered from this process's shards."""
    if jax.process_count() == 1:
        return tree
    device = jax.local_devices()[0]
    mesh = Mesh(np.asarray([device], dtype=object).reshape(1, 1), ("data", "model"))
    sharding = NamedSharding(mesh, P())

    def one(x):
        if x.is_fully_replicated:
            return jax.device_put(x.addressable_data(0), sharding)
        full, seen = np.empty(x.shape, x.dtype), np.zeros(x.shape, bool)
        for shard in x.addressable_shards:
            full[shard.index], seen[shard.index] = np.asarray(shard.data), True
        if not seen.all():
            raise ValueError(f"array {x.shape} is not held whole by process {jax.process_index()}")
        return jax.device_put(full, sharding)

    return jax.tree.map(one, tree)

"""Randomness derived from (seed, stream, step), so a resumed run draws exactly what it would have.

`key_for` gives JAX keys for device code; `np_rng` gives numpy generators for host code.
`host_stream` names a stream per process, so hosts of a multi-host run draw different samples.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np


def stream_id(stream: str) -> int:
    """Stable 31-bit id of a stream name (Python's hash() is salted per process)."""
    return zlib.crc32(stream.encode()) & 0x7FFFFFFF


def key_for(seed: int, stream: str, step: int) -> jax.Array:
    """JAX key for consumer `stream` at counter `step`."""
    key = jax.random.fold_in(jax.random.key(seed), stream_id(stream))
    return jax.random.fold_in(key, step)


def np_rng(seed: int, stream: str, step: int) -> np.random.Generator:
    """Numpy generator for consumer `stream` at counter `step`."""
    return np.random.default_rng([seed, stream_id(stream), step])


def host_stream(stream: str, process: int) -> str:
    """Stream `stream` of process `process`: unchanged on process 0 (so a single-process run draws
    exactly what it always did), `'<stream>@<process>'` on the others."""
    return stream if process == 0 else f"{stream}@{process}"

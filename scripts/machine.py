"""Machine and version facts recorded beside every benchmark result, and the atomic JSON write
every benchmark uses for its raw results (host only)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def machine_info() -> dict:
    """CPU model, core count, python/jax/flax/mujoco/gymnasium versions, JAX devices, git commit."""
    import flax
    import gymnasium
    import jax
    import mujoco

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "flax": flax.__version__,
        "mujoco": mujoco.__version__,
        "gymnasium": gymnasium.__version__,
        "devices": [str(d) for d in jax.devices()],
        "commit": commit,
    }


def write_result(path, data, *, default=None) -> None:
    """Write `data` as indented JSON to `path` atomically (a temp file, then rename), creating
    the folder: a benchmark killed mid-write never leaves a truncated result behind."""
    from worldmodel.files import atomic_write

    text = json.dumps(data, indent=1, default=default)
    atomic_write(path, lambda f: f.write(text))


def timed(fn, repeats: int) -> dict:
    """Wall-clock of `fn()`: the first call apart (compile), then the median, min and max in ms of
    `repeats` more calls. `fn` must block until its result is ready."""
    start = time.perf_counter()
    fn()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    t = np.array(times) * 1e3
    return {
        "median_ms": float(np.median(t)),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "first_call_s": compile_s,
        "repeats": repeats,
    }

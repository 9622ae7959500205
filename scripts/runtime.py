"""Run-folder housekeeping for the scripts (host only): repair what a hard kill can leave behind.

A process killed mid-write may leave metrics.jsonl ending in a partial line; appending to it
would glue the next record onto that fragment, so the fragment is cut before the sink opens.

A fresh run folder named by a time stamp is claimed with an exclusive mkdir (`claim_run_dir`): two
runs of the same seed started in the same second get `...-<stamp>` and `...-<stamp>-2`, never one
shared folder (where they would interleave metrics and overwrite each other's checkpoints).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def claim_run_dir(parent: Path, prefix: str) -> Path:
    """Create and return a new folder `parent/<prefix>-<YYYYmmdd-HHMMSS>[-n]` that no other run
    holds (mkdir without exist_ok is atomic: of two racing runs, exactly one gets each name)."""
    from worldmodel.errors import UserError

    base = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = parent / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise UserError(
            f"cannot create a run folder under {str(parent)!r}: {e.strerror or e}"
        ) from e
    raise UserError(f"no free run folder name under {str(parent)!r} for {base}; set run_dir=...")


def repair_jsonl(path: Path) -> int:
    """Truncate `path` after its last newline (drops a partial last record).

    Returns the number of bytes dropped (0 when the file is missing or ends cleanly).
    """
    if not path.is_file():
        return 0
    size = path.stat().st_size
    with open(path, "rb+") as f:
        keep = 0
        block = 1 << 16
        end = size
        while end > 0:  # scan backwards for the last newline
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder (and parents); a path that cannot be one is a one-line UserError."""
    from worldmodel.errors import UserError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot use run_dir {str(path)!r}: {e.strerror or e}") from e
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a local jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""Run-folder housekeeping for the scripts (host only): repair what a hard kill can leave behind.

A process killed mid-write may leave metrics.jsonl ending in a partial line; appending to it
would glue the next record onto that fragment, so the fragment is cut before the sink opens.
"""

from __future__ import annotations

import os
from pathlib import Path


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

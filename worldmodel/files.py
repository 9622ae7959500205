"""Atomic file writes (host only, standard library): a reader, or a run killed mid-write, sees
either the old file or the whole new one, never a truncated one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False):
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path`
    (creating the folder). The temp file is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; results are meant to be read
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""File integrity for checkpoints (host only): atomic npz writes, fsync, sha256 digests of files,
JSON values and state pytrees, and leaf signatures that name the first leaf two trees differ in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from worldmodel.errors import CheckpointError
from worldmodel.files import atomic_write

CHUNK = 1 << 22  # 4 MiB reads when hashing a file


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `path` atomically (`files.atomic_write`)."""
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)


class CheckpointMismatch(CheckpointError):
    """The checkpoint is intact but holds a different state structure (another model config)."""


def tree_digest(tree: Any) -> str | None:
    """sha256 over every leaf's path, dtype, shape and bytes (a replicated leaf: this process's
    copy); None when some leaf is split across hosts (orbax's own checks apply)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    remote = [x for _, x in leaves if not getattr(x, "is_fully_addressable", True)]
    if not all(x.is_fully_replicated for x in remote):
        return None
    digest = hashlib.sha256()
    for path, leaf in leaves:
        if not getattr(leaf, "is_fully_addressable", True):
            leaf = leaf.addressable_data(0)  # this process's replica
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)  # typed keys have no numpy view
        array = np.ascontiguousarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}{list(array.shape)};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` and `root`'s parent (durable after a crash)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))
    fsync_dir(root.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def signature(tree: Any) -> dict[str, str]:
    """{leaf path: 'dtype[shape]'}, e.g. {".params['w']": 'float32[4, 8]', '.step': 'int'}."""
    signature = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            signature[jax.tree_util.keystr(path)] = f"{leaf.dtype}{list(leaf.shape)}"
        else:  # Python scalars
            signature[jax.tree_util.keystr(path)] = type(leaf).__name__
    return signature


def check_signature(saved: dict[str, str], template: dict[str, str], where: str) -> None:
    """Raise CheckpointMismatch naming the first leaf that differs between the two."""
    if saved == template:
        return
    prefix = f"{where} was made with another model config (use its config, or a new run_dir):"
    extra = sorted(saved.keys() - template.keys())
    if extra:
        raise CheckpointMismatch(f"{prefix} leaf {extra[0]} is missing from the template")
    for path, expected in template.items():
        if path not in saved:
            raise CheckpointMismatch(f"{prefix} leaf {path} is missing from the checkpoint")
        if saved[path] != expected:
            raise CheckpointMismatch(
                f"{prefix} leaf {path} is {saved[path]} there, {expected} in the template"
            )

"""Resume checkpoints (host only): the state pytree via orbax, replay arrays as .npz, meta json.

Layout under `directory`: `<step>/` (orbax items `state`, `meta`, `manifest`) and
`replay/<step>.npz`. A half-written checkpoint is never restored: the npz is written and
fsynced first (temp file + rename), then orbax commits the step directory atomically with a
manifest of the npz's size and sha256 (checked on restore) and the state's leaf signature.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp

from worldmodel.errors import CheckpointError

_REPLAY_DIR = "replay"
_CHUNK = 1 << 22  # 4 MiB reads when hashing the replay file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `path` atomically: temp file in the same dir, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _signature(tree: Any) -> dict[str, str]:
    """{leaf path: 'dtype[shape]'}, e.g. {".params['w']": 'float32[4, 8]', '.step': 'int'}."""
    signature = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            signature[jax.tree_util.keystr(path)] = f"{leaf.dtype}{list(leaf.shape)}"
        else:  # Python scalars
            signature[jax.tree_util.keystr(path)] = type(leaf).__name__
    return signature


def _check_signature(saved: dict[str, str], template: dict[str, str], where: str) -> None:
    """Raise CheckpointError naming the first leaf that differs between the two."""
    if saved == template:
        return
    prefix = f"{where} does not match the state template:"
    extra = sorted(saved.keys() - template.keys())
    if extra:
        raise CheckpointError(f"{prefix} leaf {extra[0]} is missing from the template")
    for path, expected in template.items():
        if path not in saved:
            raise CheckpointError(f"{prefix} leaf {path} is missing from the checkpoint")
        if saved[path] != expected:
            raise CheckpointError(
                f"{prefix} leaf {path} is {saved[path]} there, {expected} in the template"
            )


class Checkpointer:
    """Saves and restores resume checkpoints under `directory`, keeping the `keep` newest.

    `save(step, state=, replay=, meta=)` returns only once the checkpoint is complete on disk.
    `restore(template_state, step=None) -> (state, replay, meta)` raises CheckpointError
    (one line) when the checkpoint is missing, incomplete or corrupt.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).resolve()
        self.keep = keep
        self._manager: ocp.CheckpointManager | None = None

    # The manager is created lazily so that reading a missing directory does not create it.
    def _get_manager(self, *, create: bool) -> ocp.CheckpointManager | None:
        if self._manager is None:
            if not self.directory.is_dir():
                if not create:
                    return None
                self.directory.mkdir(parents=True, exist_ok=True)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep,
                create=True,
                cleanup_tmp_directories=True,  # drop leftovers of an interrupted save
                enable_async_checkpointing=False,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def _replay_path(self, step: int) -> Path:
        return self.directory / _REPLAY_DIR / f"{step}.npz"

    def all_steps(self) -> list[int]:
        """Steps with a committed checkpoint, ascending."""
        manager = self._get_manager(create=False)
        return sorted(manager.all_steps()) if manager is not None else []

    def latest_step(self) -> int | None:
        """Newest committed step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, *, state: Any, replay: dict[str, np.ndarray], meta: dict) -> None:
        """Write checkpoint `step`: `state` (any JAX pytree), `replay` arrays, `meta`
        (json-serialisable). Returns once the checkpoint is complete on disk.

        Raises CheckpointError if `step` already exists.
        """
        step = int(step)
        arrays = {}
        for key, value in replay.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(f"replay[{key!r}] has dtype object; only plain arrays")
            arrays[str(key)] = array
        manager = self._get_manager(create=True)
        if step in manager.all_steps():
            raise CheckpointError(f"checkpoint step {step} already exists in {self.directory}")
        replay_path = self._replay_path(step)
        replay_path.parent.mkdir(exist_ok=True)
        _write_npz(replay_path, arrays)  # before the orbax commit, see module docstring
        manifest = {
            "replay": {
                "bytes": replay_path.stat().st_size,
                "sha256": _sha256(replay_path),
            },
            "state": _signature(state),
        }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(meta),
            manifest=ocp.args.JsonSave(manifest),
        )
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
        self._prune_replay(set(manager.all_steps()))

    def _prune_replay(self, live_steps: set[int]) -> None:
        """Delete npz files (and temp files) that belong to no committed step."""
        for path in (self.directory / _REPLAY_DIR).iterdir():
            stem = path.name.removesuffix(".npz")
            live = path.suffix == ".npz" and stem.isdigit() and int(stem) in live_steps
            if not live:
                path.unlink(missing_ok=True)

    def restore(
        self, template_state: Any, step: int | None = None
    ) -> tuple[Any, dict[str, np.ndarray], dict]:
        """Restore `step` (default: latest) into `template_state`'s structure and shardings.

        Leaf paths, shapes and dtypes must equal the saved ones (no silent casts), so a
        changed model config is reported rather than loaded. Returns (state, replay, meta).
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
            step = steps[-1]
        step = int(step)
        if step not in steps:
            have = ", ".join(map(str, steps)) or "none"
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory} (steps: {have})"
            )
        where = f"checkpoint step {step} in {self.directory}"
        manifest = self._restore_items(step, where, manifest=ocp.args.JsonRestore())
        manifest = manifest.manifest
        if not isinstance(manifest, dict) or manifest.keys() != {"replay", "state"}:
            raise CheckpointError(f"{where} is corrupt (malformed manifest)")
        _check_signature(manifest["state"], _signature(template_state), where)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template_state)
        restored = self._restore_items(
            step,
            where,
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore(),
        )
        replay = self._load_replay(step, manifest["replay"])
        return restored.state, replay, restored.meta

    def _restore_items(self, step: int, where: str, **items: Any) -> Any:
        try:
            manager = self._get_manager(create=False)
            return manager.restore(step, args=ocp.args.Composite(**items))
        # orbax and tensorstore raise many exception types; each means "unusable".
        except Exception as e:
            raise CheckpointError(f"{where} is corrupt ({_first_line(e)})") from e

    def _load_replay(self, step: int, record: dict) -> dict[str, np.ndarray]:
        path = self._replay_path(step)
        if not path.is_file():
            raise CheckpointError(f"checkpoint step {step}: replay file {path} is missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise CheckpointError(
                f"checkpoint step {step}: replay file {path} is truncated or corrupt "
                f"({size} bytes, expected {record['bytes']})"
            )
        if _sha256(path) != record["sha256"]:
            raise CheckpointError(
                f"checkpoint step {step}: replay file {path} is corrupt (sha256 mismatch)"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"checkpoint step {step}: cannot read replay file {path} ({_first_line(e)})"
            ) from e

    def close(self) -> None:
        """Release orbax resources (background threads)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

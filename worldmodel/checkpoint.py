"""Resume checkpoints (host only): the state pytree via orbax, replay arrays as .npz, meta json.

Layout under `directory`: `<step>/` (orbax items `state`, `meta`, `manifest`) and
`replay/<step>.npz`. A half-written checkpoint is never restored: the npz is written and
fsynced first (temp file + rename), then orbax commits the step directory atomically (it writes
into `<step>.orbax-checkpoint-tmp-*`, adds `commit_success.txt`, renames) with a manifest of the
npz's size and sha256, the state's leaf signature and sha256 digests of the state's bytes and of
meta; everything is fsynced before `save` returns. A step directory without `commit_success.txt`
is ignored; one that fails verification is reported and `restore_latest` falls back to the
previous one, moving the bad one to `corrupt/`. Nothing is unpickled.

Several processes (jax.distributed, `directory` on a shared filesystem): orbax saves the state
collectively; process p keeps its replay, with its own meta inside, in `replay/p<p>/<step>.npz`
(process 0: `replay/<step>.npz`); the manifest's `hosts` lists each one's replay size, sha256 and
state digest. A resume needs as many processes and verifies on all; one process reads process 0's.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp

from worldmodel.distributed import allgather_json
from worldmodel.errors import CheckpointError, first_line
from worldmodel.integrity import (
    CheckpointMismatch,
    check_signature,
    fsync_tree,
    json_digest,
    sha256,
    signature,
    tree_digest,
    write_npz,
)

_REPLAY_DIR = "replay"
_CORRUPT_DIR = "corrupt"  # verified-bad checkpoints are moved here (kept for inspection)
_COMMIT_FILE = "commit_success.txt"  # orbax writes it just before the final rename
_HOST_META = "__meta__"  # npz entry holding a process's meta (JSON) in multi-process runs


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

    def _replay_dir(self) -> Path:
        """This process's replay folder: `replay/` (process 0) or `replay/p<p>/`."""
        process = jax.process_index()
        root = self.directory / _REPLAY_DIR
        return root if process == 0 else root / f"p{process}"

    def _replay_path(self, step: int) -> Path:
        return self._replay_dir() / f"{step}.npz"

    def all_steps(self) -> list[int]:
        """Steps with a committed checkpoint (orbax's commit marker present), ascending."""
        manager = self._get_manager(create=False)
        if manager is None:
            return []
        steps = manager.all_steps()
        return sorted(s for s in steps if (self.directory / str(s) / _COMMIT_FILE).is_file())

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
        processes = jax.process_count()
        if processes > 1:  # each process's own meta travels with its own replay
            arrays[_HOST_META] = np.asarray(json.dumps(meta, sort_keys=True))
        manager = self._get_manager(create=True)
        if step in self.all_steps():
            raise CheckpointError(f"checkpoint step {step} already exists in {self.directory}")
        if step in manager.all_steps():  # a directory without orbax's commit marker
            self._quarantine([step])
            manager = self._get_manager(create=True)
        replay_path = self._replay_path(step)
        replay_path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(replay_path, arrays)  # before the orbax commit, see module docstring
        record = {"bytes": replay_path.stat().st_size, "sha256": sha256(replay_path)}
        manifest = {
            "replay": record,
            "state": signature(state),
            "digest": {"state": tree_digest(state), "meta": json_digest(meta)},
        }
        if processes > 1:
            hosts = allgather_json({"replay": record, "state": manifest["digest"]["state"]})
            manifest["replay"], manifest["hosts"] = hosts[0]["replay"], hosts
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(meta),
            manifest=ocp.args.JsonSave(manifest),
        )
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
        if jax.process_index() == 0:
            fsync_tree(self.directory / str(step))
        self._prune_replay(set(manager.all_steps()))

    def _prune_replay(self, live_steps: set[int]) -> None:
        """Delete this process's npz files (and temp files) that belong to no committed step."""
        for path in self._replay_dir().iterdir():
            stem = path.name.removesuffix(".npz")
            live = path.suffix == ".npz" and stem.isdigit() and int(stem) in live_steps
            if not live and not path.is_dir():  # folders: other processes' replay
                path.unlink(missing_ok=True)

    def restore(
        self, template_state: Any, step: int | None = None, *, same_hosts: bool = False
    ) -> tuple[Any, dict[str, np.ndarray], dict]:
        """Restore `step` (default: latest) into `template_state`'s structure and shardings.

        Leaf paths, shapes and dtypes must equal the saved ones (no silent casts), so a
        changed model config is reported rather than loaded. Returns (state, replay, meta):
        this process's own replay and meta. same_hosts (resume): the checkpoint must have been
        written by as many processes as this run has (always so with several processes).
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
        keys = manifest.keys() if isinstance(manifest, dict) else set()
        if not {"replay", "state"} <= keys <= {"replay", "state", "digest", "hosts"}:
            raise CheckpointError(f"{where} is corrupt (malformed manifest)")
        hosts = manifest.get("hosts") or [{"replay": manifest["replay"]}]
        if (same_hosts or jax.process_count() > 1) and len(hosts) != jax.process_count():
            raise CheckpointMismatch(
                f"{where} was written by {len(hosts)} process(es), this run has "
                f"{jax.process_count()} (resume with as many, or use a new run_dir)"
            )
        check_signature(manifest["state"], signature(template_state), where)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template_state)
        restored = self._restore_items(
            step,
            where,
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore(),
        )
        digest = manifest.get("digest") or {}  # absent in checkpoints of older versions
        state_dir = self.directory / str(step) / "state"
        if digest.get("state") and tree_digest(restored.state) != digest["state"]:
            raise CheckpointError(f"{where} is corrupt (state files in {state_dir} fail sha256)")
        if digest.get("meta") and json_digest(restored.meta) != digest["meta"]:
            raise CheckpointError(f"{where} is corrupt (meta fails sha256)")
        replay = self._load_replay(step, hosts[jax.process_index()]["replay"])
        meta = restored.meta
        if _HOST_META in replay:
            meta = json.loads(str(replay.pop(_HOST_META)))
        return restored.state, replay, meta

    def restore_latest(
        self, template_state: Any, *, warn: Callable[[str], None]
    ) -> tuple[int, Any, dict[str, np.ndarray], dict] | None:
        """Restore the newest checkpoint that verifies: (step, state, replay, meta), or None
        when there is none. Each corrupt newer one is reported via `warn(message)` and, once a
        good one is found, moved to `corrupt/`. Raises CheckpointMismatch at once (an intact
        checkpoint of another config), CheckpointError when every checkpoint is corrupt.
        A checkpoint of another number of processes is a CheckpointMismatch; with several
        processes one counts as good only when it verifies on every process.
        """
        bad: list[int] = []
        for step in reversed(self.all_steps()):
            try:
                state, replay, meta = self.restore(template_state, step, same_hosts=True)
                error = None
            except CheckpointMismatch:
                raise
            except CheckpointError as e:
                error = str(e)
            errors = [e for e in allgather_json(error) if e is not None]
            if errors:
                warn(f"{errors[0]}; trying the previous checkpoint")
                bad.append(step)
                continue
            self._quarantine(bad)
            return step, state, replay, meta
        if bad:
            raise CheckpointError(
                f"every checkpoint in {self.directory} is corrupt (steps "
                f"{', '.join(map(str, sorted(bad)))}); move it away or pass resume=false"
            )
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Move step directories (process 0) and this process's replay files to `corrupt/`
        (out of orbax's sight)."""
        if not steps:
            return
        self.close()  # the manager caches the step list
        target = self.directory / _CORRUPT_DIR
        target.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        process = jax.process_index()
        tag = f".p{process}" if process else ""
        for step in steps:
            shared = [self.directory / str(step)] if process == 0 else []
            for path in [*shared, self._replay_path(step)]:
                if path.exists():
                    path.rename(target / f"{path.name}{tag}.{stamp}")

    def manifest(self, step: int) -> dict:
        """The manifest of committed checkpoint `step`: {'replay': {bytes, sha256}, 'state':
        {leaf: 'dtype[shape]'}, 'digest': {'state', 'meta'} sha256}; equal digests = equal bits."""
        where = f"checkpoint step {step} in {self.directory}"
        return self._restore_items(step, where, manifest=ocp.args.JsonRestore()).manifest

    def meta(self, step: int) -> dict:
        """The meta dict of committed checkpoint `step` (no state or replay is read)."""
        where = f"checkpoint step {step} in {self.directory}"
        return self._restore_items(step, where, meta=ocp.args.JsonRestore()).meta

    def _restore_items(self, step: int, where: str, **items: Any) -> Any:
        try:
            manager = self._get_manager(create=False)
            return manager.restore(step, args=ocp.args.Composite(**items))
        # orbax and tensorstore raise many exception types; each means "unusable".
        except Exception as e:
            raise CheckpointError(f"{where} is corrupt ({first_line(e)})") from e

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
        if sha256(path) != record["sha256"]:
            raise CheckpointError(
                f"checkpoint step {step}: replay file {path} is corrupt (sha256 mismatch)"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"checkpoint step {step}: cannot read replay file {path} ({first_line(e)})"
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

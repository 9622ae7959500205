"""Fresh run folders are claimed exclusively: concurrent runs of one seed never share a folder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from scripts.runtime import claim_run_dir
from worldmodel.errors import UserError


def test_same_second_claims_get_distinct_folders(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: claim_run_dir(tmp_path / "runs", "seed0"), range(16)))
    assert len({p.name for p in paths}) == 16  # 16 claims, 16 folders
    assert all(p.is_dir() and p.parent == tmp_path / "runs" for p in paths)
    assert all(p.name.startswith("seed0-") for p in paths)


def test_unusable_parent_is_a_one_line_user_error(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    with pytest.raises(UserError, match="cannot create a run folder"):
        claim_run_dir(blocker, "seed0")


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    from worldmodel.files import atomic_write

    path = tmp_path / "sub" / "result.json"
    atomic_write(path, lambda f: f.write("old"))
    assert path.read_text() == "old"

    def half_then_fail(f):
        f.write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temp left
    atomic_write(path, lambda f: f.write(b"new"), binary=True)
    assert path.read_bytes() == b"new"

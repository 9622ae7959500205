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

"""file:// store: what it refuses (a folder that leads out of the store) and what it must
still accept (a root behind a link, folders other writers made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_runtime.storage.base import OutsideStore
from pipeline_runtime.storage.local import FileStore


def test_a_put_refuses_a_symlink_below_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    """A symlinked folder further up than the write's own folder is refused too, before any
    folder is made behind it (a check of only the write's folder passed while it was missing)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    (root / "run").mkdir(parents=True)
    (root / "run" / "artifacts").symlink_to(outside)
    store = FileStore(f"file://{root}", durable=False)
    with pytest.raises(OutsideStore, match="symlink"):
        store.put("run/artifacts/ab/abcd", b"x")
    assert list(outside.iterdir()) == []


def test_a_store_behind_a_symlink_and_a_store_folder_made_meanwhile_still_work(tmp_path: Path) -> None:
    """The root may itself be a link; a folder another writer made is used, not refused."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    store = FileStore(f"file://{tmp_path}/link", durable=False)
    store.put("run/a/x", b"1")
    (tmp_path / "real" / "run" / "b").mkdir()
    store.put("run/b/y", b"2")
    assert store.get("run/a/x") == b"1" and (tmp_path / "real" / "run" / "b" / "y").read_bytes() == b"2"

"""Store options a caller asks for by name, not by the store's class or URI scheme."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime.storage import open_store
from pipeline_runtime.storage.base import Tidy


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def spy(fd: Any) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_a_durable_local_store_fsyncs_and_a_scratch_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_fsyncs(monkeypatch)
    open_store(f"file://{tmp_path}/a").put("x/one", b"1")
    assert calls, "a durable put must reach the disk"
    calls.clear()
    open_store(f"file://{tmp_path}/b", durable=False).put("x/one", b"1")
    assert calls == []
    assert (tmp_path / "b" / "x" / "one").read_bytes() == b"1"  # still written, atomically


def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each os.fsync reached: the file or folder its descriptor is open on."""
    paths: list[str] = []
    real = os.fsync

    def spy(fd: Any) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


@pytest.mark.parametrize("if_absent", [False, True], ids=["artifact", "commit"])
def test_a_durable_put_fsyncs_the_folder_that_names_it_and_new_folders_up_to_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, if_absent: bool
) -> None:
    """POSIX: a rename or link is durable once its directory is fsynced; a new folder once
    its parent is. Without it a host crash can lose a commit whose put had returned."""
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    store.put("t/run/keep", b"0")
    paths = fsynced_paths(monkeypatch)
    store.put("t/run/commits/00000001.json", b"1", if_absent=if_absent)  # commits/ is new
    folders = [p for p in paths if os.path.isdir(p)]
    assert folders == [str(root / "t/run/commits"), str(root / "t/run"), str(root / "t"), str(root)]
    assert [p for p in paths if not os.path.isdir(p)], "the object's own bytes are fsynced first"
    paths.clear()
    store.put("t/run/commits/00000002.json", b"2", if_absent=if_absent)  # the folder exists now
    assert [p for p in paths if os.path.isdir(p)] == [str(root / "t/run/commits")]


def test_a_store_without_a_scratch_mode_is_opened_as_it_is() -> None:
    store = open_store("memory://options-test", durable=False)  # MemoryStore takes no `durable`
    store.put("k", b"v")
    assert store.get("k") == b"v" and not isinstance(store, Tidy)


def test_tidy_removes_killed_writes_and_empty_folders_under_the_prefix_only(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/s")
    assert isinstance(store, Tidy)
    store.put("work/a/b/chunk", b"x")
    store.put("keep/other", b"y")
    (tmp_path / "s" / "work" / "a" / ".tmp-killed").write_bytes(b"half")
    (tmp_path / "s" / "keep" / ".tmp-elsewhere").write_bytes(b"half")
    store.delete("work/a/b/chunk")
    store.tidy("work")
    assert not (tmp_path / "s" / "work").exists()
    assert (tmp_path / "s" / "keep" / "other").exists() and (tmp_path / "s" / "keep" / ".tmp-elsewhere").exists()
    store.tidy("", recursive=False)  # the root's own temporaries only: nothing below it, no folders
    assert (tmp_path / "s" / "keep" / ".tmp-elsewhere").exists() and (tmp_path / "s").is_dir()

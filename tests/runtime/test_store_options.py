"""Store options a caller asks for by name, not by the store's class or URI scheme."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline_runtime import storage
from pipeline_runtime.storage import open_store
from pipeline_runtime.storage.base import Tidy
from pipeline_runtime.storage.local import DIRECT_BYTES


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


def test_a_process_that_asks_for_scratch_stores_gets_them_unless_a_caller_says_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the chaos child asks for: a pipeline's own `open_store(output_uri)` skips fsync
    there too, while a caller that names `durable=True` still gets it."""
    calls = count_fsyncs(monkeypatch)
    monkeypatch.setitem(storage._defaults, "durable", True)  # put back after the test
    storage.set_durable_default(False)
    open_store(f"file://{tmp_path}/a").put("x/one", b"1")
    assert calls == []
    open_store(f"file://{tmp_path}/b", durable=True).put("x/one", b"1")
    assert calls, "durable=True must still reach the disk"
    storage.set_durable_default(True)
    calls.clear()
    open_store(f"file://{tmp_path}/c").put("x/one", b"1")
    assert calls, "the default is durable again"


def test_the_chaos_child_opens_every_store_of_its_process_as_scratch(tmp_path: Path) -> None:
    """In a real process, as the engine starts one: after `child.run`, a store opened without
    `durable` (as dataprep opens its output) is a scratch store."""
    code = (
        "from pipeline_runtime.chaos import child; from pipeline_runtime.storage import open_store\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert child.run(['pipelines']) == 0\n"
        f"print(open_store('file://{tmp_path}/out').durable)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each os.fsync reached: the file or folder its descriptor is open on."""
    paths: list[str] = []
    real = os.fsync

    def spy(fd: Any) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


def folders_in(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.isdir(p)]


@pytest.mark.parametrize("if_absent", [False, True], ids=["artifact", "commit"])
def test_a_durable_put_fsyncs_the_folder_that_names_it_and_new_folders_up_to_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, if_absent: bool
) -> None:
    """POSIX: a rename or link is durable once its directory is fsynced; a new folder once
    its parent is. Without it a host crash can lose a commit whose put had returned."""
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    paths = fsynced_paths(monkeypatch)
    store.put("t/run/keep", b"0")  # every folder is new
    assert folders_in(paths) == [str(root / "t/run"), str(root / "t"), str(root)]
    paths.clear()
    store.put("t/run/commits/00000001.json", b"1", if_absent=if_absent)  # commits/ is new
    assert folders_in(paths) == [str(root / "t/run/commits"), str(root / "t/run")]
    assert [p for p in paths if not os.path.isdir(p)], "the object's own bytes are fsynced first"
    paths.clear()
    store.put("t/run/commits/00000002.json", b"2", if_absent=if_absent)  # the folder exists now
    assert folders_in(paths) == [str(root / "t/run/commits")]


def test_a_store_opened_on_folders_it_did_not_make_syncs_their_names_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (an earlier attempt) made the folders: whether it synced their names
    is not known, so the first put syncs them up to the root, and later ones do not again
    (a commit's 16 artifacts in 16 new `ab/` folders cost 16 fsyncs of `artifacts/`, not
    16 of every folder up to the root)."""
    root = tmp_path / "store"
    (root / "t/run/artifacts").mkdir(parents=True)
    store = open_store(f"file://{root}")
    paths = fsynced_paths(monkeypatch)
    store.put("t/run/artifacts/ab/one", b"1")
    art = str(root / "t/run/artifacts")
    assert folders_in(paths) == [art + "/ab", art, str(root / "t/run"), str(root / "t"), str(root)]
    paths.clear()
    store.put("t/run/artifacts/cd/two", b"2")
    assert folders_in(paths) == [art + "/cd", art]


def test_a_folder_a_cleanup_took_away_is_synced_into_its_parent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    store.put("t/run/artifacts/ab/one", b"1")
    store.delete("t/run/artifacts/ab/one")  # takes away ab/, artifacts/, run/ and t/ too
    assert not (root / "t").exists()
    paths = fsynced_paths(monkeypatch)
    store.put("t/run/artifacts/ab/one", b"1")
    art = str(root / "t/run/artifacts")
    assert folders_in(paths) == [art + "/ab", art, str(root / "t/run"), str(root / "t"), str(root)]


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


def resident_bytes(path: Path) -> int:
    """How much of a file the page cache holds (mincore(2) over a read-only mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size, page = path.stat().st_size, mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            pages = (size + page - 1) // page
            vec = ctypes.create_string_buffer(pages)
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in vec.raw[:pages]) * page
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [DIRECT_BYTES, DIRECT_BYTES + 1, 3 * DIRECT_BYTES + 4095, 9 << 20])
def test_a_durable_artifact_is_written_whole_and_leaves_the_page_cache(tmp_path: Path, size: int) -> None:
    """Written once and read by a resume in another pod, an artifact must not take the pod's
    memory as page cache (issue 17: copying 1 GB into it cost 1.2 s of a 10-step run).
    Sizes: exactly the threshold, an unaligned tail, more than one bounce buffer."""
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    store = open_store(f"file://{tmp_path}")
    store.put("artifacts/x", data.data)
    target = tmp_path / "artifacts" / "x"
    assert target.read_bytes() == data.tobytes()  # (this read brings it back into the cache)
    store.put("artifacts/y", data.data)
    assert resident_bytes(tmp_path / "artifacts" / "y") <= 2 * mmap.PAGESIZE  # at most the tail's page
    scratch = open_store(f"file://{tmp_path}/scratch", durable=False)  # a scratch store keeps the cache
    scratch.put("z", data.data)
    assert resident_bytes(tmp_path / "scratch" / "z") == pytest.approx(size, abs=mmap.PAGESIZE)


def test_a_filesystem_that_refuses_o_direct_gets_the_ordinary_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some folders refuse O_DIRECT (tmpfs before Linux 6.6, some FUSE mounts): EINVAL on the
    first direct write, here raised the way such a kernel raises it."""
    real = os.write

    def refusing(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    data = bytes(range(256)) * (DIRECT_BYTES // 256 + 7)
    store = open_store(f"file://{tmp_path}")
    store.put("artifacts/x", data)
    assert resident_bytes(tmp_path / "artifacts" / "x") <= mmap.PAGESIZE  # fsynced, then dropped
    assert (tmp_path / "artifacts" / "x").read_bytes() == data

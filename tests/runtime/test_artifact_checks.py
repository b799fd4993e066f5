"""Loading artifacts back: every byte is checked, old references included (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline_runtime.checkpoint import RunLog
from pipeline_runtime.codec import CorruptArtifact, Encoder, artifact_path, decode, snapshot
from pipeline_runtime.storage.base import NotFound
from pipeline_runtime.storage.local import FileStore
from pipeline_runtime.storage.memory import MemoryStore

VALUE = {
    "arr": np.arange(50_000, dtype=np.float32).reshape(100, 500),
    "same_bytes_other_dtype": np.arange(50_000, dtype=np.float32).view(np.int32),
    "raw": bytes(range(256)) * 20,
    "big_json": list(range(20_000)),
}


def _runlog(kind: str, tmp_path: Path) -> RunLog:
    store = FileStore(f"file://{tmp_path}") if kind == "file" else MemoryStore(f"memory://checks-{tmp_path.name}")
    return RunLog(store, "t", "r")


def _commit(log: RunLog, value: Any) -> Any:
    node, _ = Encoder(log.put_artifact).resolve(snapshot(value))
    return node


def _without_xxh3(node: Any) -> Any:
    """The node as a runtime before xxh3-128 wrote it: references carry the sha256 only."""
    text = json.dumps(node)
    old = json.loads(text, object_hook=lambda d: {k: v for k, v in d.items() if k != "xxh3_128"})
    assert "xxh3_128" in text and "xxh3_128" not in json.dumps(old)
    return old


def _damage(log: RunLog, sha: str, *, truncate: bool = False) -> None:
    path = artifact_path(sha)
    data = bytearray(log.get_artifact(path))
    if truncate:
        del data[-1]
    else:
        data[len(data) // 2] ^= 0x01  # one bit, the size unchanged
    log.put_artifact(path, bytes(data))


def _assert_equal(back: dict[str, Any]) -> None:
    assert list(back) == list(VALUE)
    for key, want in VALUE.items():
        if isinstance(want, np.ndarray):
            assert back[key].dtype == want.dtype and back[key].shape == want.shape
            np.testing.assert_array_equal(back[key], want)
        else:
            assert back[key] == want


READ = pytest.mark.parametrize("direct", [True, False], ids=["read-into", "bytes"])


@READ
@pytest.mark.parametrize("kind", ["file", "memory"])
@pytest.mark.parametrize("old_refs", [False, True], ids=["xxh3", "sha256-only"])
def test_artifacts_load_back_exactly(kind: str, old_refs: bool, direct: bool, tmp_path: Path) -> None:
    log = _runlog(kind, tmp_path)
    node = _commit(log, VALUE)
    reader = log.artifact_reader if direct else None
    assert (reader is not None) == direct
    _assert_equal(decode(_without_xxh3(node) if old_refs else node, log.get_artifact, get_into=reader))


@pytest.mark.parametrize("kind", ["file", "memory"])
@pytest.mark.parametrize("old_refs", [False, True], ids=["xxh3", "sha256-only"])
@pytest.mark.parametrize("key", ["arr", "raw", "big_json"])
@pytest.mark.parametrize("truncate", [False, True], ids=["flipped-bit", "truncated"])
@READ
def test_a_damaged_artifact_is_reported_damaged(
    kind: str, old_refs: bool, key: str, truncate: bool, direct: bool, tmp_path: Path
) -> None:
    log = _runlog(kind, tmp_path)
    node = _commit(log, VALUE)
    _damage(log, node["dict"][key]["ref"]["sha256"], truncate=truncate)
    reader = log.artifact_reader if direct else None
    with pytest.raises(CorruptArtifact, match="damaged"):
        decode(_without_xxh3(node) if old_refs else node, log.get_artifact, get_into=reader)


def test_a_reference_whose_checksum_was_changed_is_reported_damaged(tmp_path: Path) -> None:
    log = _runlog("file", tmp_path)
    node = _commit(log, {"arr": VALUE["arr"]})
    node["dict"]["arr"]["ref"]["xxh3_128"] = "0" * 32
    with pytest.raises(CorruptArtifact, match="xxh3-128 mismatch"):
        decode(node, log.get_artifact, get_into=log.artifact_reader)


def test_loaded_arrays_are_read_only_for_good(tmp_path: Path) -> None:
    log = _runlog("file", tmp_path)
    back = decode(_commit(log, VALUE), log.get_artifact, get_into=log.artifact_reader)
    for key in ("arr", "same_bytes_other_dtype"):
        assert not back[key].flags.writeable
        with pytest.raises(ValueError):
            back[key].flags.writeable = True  # committed bytes: a step that changes them copies


def test_a_folder_where_an_artifact_should_be_is_not_found(tmp_path: Path) -> None:
    store = FileStore(f"file://{tmp_path}")
    (tmp_path / "x").mkdir()
    with pytest.raises(NotFound):
        store.get_into("x", lambda n: np.empty(n, np.uint8).data)

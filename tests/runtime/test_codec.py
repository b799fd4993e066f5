"""Pure tests of the value codec and of the in-process run loop (memory store)."""

from __future__ import annotations

import gc
import hashlib
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline_runtime import Pipeline, codec, step
from pipeline_runtime.codec import Encoder, UnsupportedValue, artifact_path, decode, snapshot
from pipeline_runtime.storage.memory import MemoryStore


def roundtrip(value: Any) -> tuple[Any, dict[str, bytes], Encoder]:
    stored: dict[str, bytes] = {}
    enc = Encoder(lambda path, data: stored.__setitem__(path, bytes(data)))
    node, _ = enc.resolve(snapshot(value))
    return decode(node, stored.__getitem__), stored, enc


def test_values_roundtrip_exactly() -> None:
    value = {
        "n": 3,
        "s": "x",
        "f": [1.5, None, True],
        "arr": np.arange(12.0).reshape(3, 4),
        "chunks": [np.ones((2, 2), np.uint8), np.zeros(0, np.int16)],
        "raw": b"\x00" * 5000,
        "tiny": b"ab",
        "nested": {"a": np.array([1, 2], ">i4"), "b": {"c": [1]}},
        "big": list(range(20000)),
    }
    back, stored, _ = roundtrip(value)
    assert back["n"] == 3 and back["f"] == [1.5, None, True] and back["big"] == value["big"]
    np.testing.assert_array_equal(back["arr"], value["arr"])
    assert back["nested"]["a"].dtype == np.dtype(">i4")
    assert back["chunks"][1].shape == (0,) and back["raw"] == value["raw"]
    assert back["tiny"] == b"ab"
    assert len(stored) == 2  # raw, big (json over the inline limit); the arrays are kept inline
    assert not back["arr"].flags.writeable and not back["nested"]["a"].flags.writeable  # as a stored one


def test_small_arrays_are_kept_in_the_commit_and_come_back_exactly() -> None:
    """A progress that lists one small array per chunk stored each as a file of its own
    (a 960-frame dataprep run: 636 of 24 and 48 bytes). Up to INLINE_ARRAY_LIMIT bytes an
    array now lives in the commit; one byte more and it is an artifact, as before."""
    from pipeline_runtime.codec import INLINE_ARRAY_LIMIT, CorruptArtifact

    at_limit = np.arange(INLINE_ARRAY_LIMIT, dtype=np.uint8)
    over = np.arange(INLINE_ARRAY_LIMIT + 1, dtype=np.uint8)
    fortran = np.asfortranarray(np.arange(6, dtype=">u2").reshape(2, 3))
    value = {"at": at_limit, "over": over, "f": fortran, "u0": np.zeros((2, 0), "U0"), "e": np.zeros((0, 3))}
    back, stored, _ = roundtrip(value)
    assert list(stored) == [artifact_path(hashlib.sha256(over.tobytes()).hexdigest())]
    for key, want in value.items():
        got = back[key]
        assert got.dtype.str == want.dtype.str and got.shape == want.shape and got.tobytes() == want.tobytes(), key
        assert not got.flags.writeable, key
    node, _ = Encoder(lambda path, data: None).resolve(snapshot({"a": np.arange(3, dtype="<i8")}))
    inline = node["dict"]["a"]["array"]
    assert inline["dtype"] == "<i8" and inline["shape"] == [3]
    from pipeline_runtime.cli import describe

    assert describe(node)["a"] == {"type": "ndarray", "dtype": "<i8", "shape": [3], "inline": True}  # inspect
    for broken in ({**inline, "shape": [4]}, {**inline, "dtype": "|O"}, {**inline, "b64": "!"}, {"dtype": "<i8"}):
        with pytest.raises(CorruptArtifact):
            decode({"array": broken}, lambda path: b"")


def test_unchanged_values_are_not_hashed_or_uploaded_again() -> None:
    value = {"arr": np.random.default_rng(0).random(10_000)}
    _, stored, enc = roundtrip(value)
    puts: list[str] = []
    enc._put = lambda path, data: puts.append(path)
    node, uploaded = enc.resolve(snapshot(value))
    assert uploaded == 0 and puts == []
    assert not value["arr"].flags.writeable  # frozen: what was stored stays what it is


def test_same_content_in_a_new_object_is_not_uploaded_again() -> None:
    value = {"arr": np.arange(5000)}
    _, stored, enc = roundtrip(value)
    puts: list[str] = []
    enc._put = lambda path, data: puts.append(path)
    _, uploaded = enc.resolve(snapshot({"copy": value["arr"].copy()}))
    assert uploaded == 0 and puts == []


@pytest.mark.parametrize("bad", [object(), {1: "x"}, np.array([object()]), float("nan")])
def test_unsupported_values_name_where_they_are(bad: Any) -> None:
    with pytest.raises(UnsupportedValue, match=r"ctx\['k'\]"):
        snapshot({"k": bad}, "ctx")


class Squares(Pipeline):
    name = "squares"

    class Params(BaseModel):
        n: int = 4

    @step
    def make(self, ctx: Any) -> None:
        ctx["x"] = np.arange(ctx.params.n) ** 2

    @step
    def total(self, ctx: Any) -> None:
        ctx["sum"] = int(ctx["x"].sum())


def test_library_run_returns_summary_and_resumes_in_process() -> None:
    store = MemoryStore("memory://library")
    first = Squares({"n": 200}, store=store, run_id="lib", retain="Always").run()
    assert first.executed == ["make", "total"]
    assert first.steps["make"]["status"] == "completed"
    assert first.steps["make"]["bytes_written"] == 1600  # an artifact: over the inline limit
    again = Squares({"n": 200}, store=store, run_id="lib", retain="Always").run()
    assert again.skipped == ["make", "total"] and again.executed == []
    assert again.attempt == 2


def test_checkpointing_off_runs_all_steps() -> None:
    summary = Squares(checkpoint_uri=None).run(n=3)
    assert summary.executed == ["make", "total"] and summary.checkpoint_uri is None


def test_equal_values_in_one_commit_are_uploaded_once() -> None:
    puts: list[str] = []
    enc = Encoder(lambda path, data: puts.append(path))
    twins = {"a": np.arange(10_000), "b": np.arange(10_000), "c": [np.arange(10_000)]}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        node, uploaded = enc.resolve(snapshot(twins), pool)
    assert len(puts) == 1 and uploaded == 80_000
    assert node["dict"]["a"] == node["dict"]["b"]


def test_an_empty_artifact_counts_as_stored_so_a_stale_writer_can_take_it_back() -> None:
    """Regression (the generated stale-attempt runs): the commit worker takes back the
    artifacts a fenced commit uploaded, from the list `resolve` gives; a 0-byte one was missing.
    An empty array is kept in the commit now; without inlining it is that 0-byte artifact."""
    store = MemoryStore("memory://empty-artifact")
    encoder = Encoder(store.put)
    stored: list[str] = []
    with mock.patch.object(codec, "INLINE_ARRAY_LIMIT", -1):
        plan = snapshot({"empty": np.zeros((0, 4), np.int32)})
    _, uploaded = encoder.resolve(plan, None, stored)
    assert uploaded == 0 and stored == [hashlib.sha256(b"").hexdigest()]
    assert store.exists(artifact_path(stored[0]))


def test_a_decoded_buffer_nobody_uses_is_freed_without_the_cycle_collector() -> None:
    """decode's buffers go as soon as the values do: kept for the cycle collector, each resume
    read into fresh pages (4x slower for one 100 MB array here, issue 17)."""
    stored: dict[str, bytes] = {}
    enc = Encoder(lambda path, data: stored.__setitem__(path, bytes(data)))
    node, _ = enc.resolve(snapshot({"a": np.arange(4096, dtype=np.uint8)}))

    def read_into(path: str, allocate: Any) -> int:
        view = allocate(len(stored[path])).cast("B")
        view[:] = stored[path]
        return len(view)

    gc.disable()
    try:
        back = decode(node, stored.__getitem__, get_into=read_into)
        buffer = back["a"].base
        assert isinstance(buffer, np.ndarray) and back["a"].tobytes() == bytes(range(256)) * 16
        gone = weakref.ref(buffer)
        del back, buffer
        assert gone() is None
    finally:
        gc.enable()


def test_the_encoder_keeps_no_array_alive_that_the_context_let_go() -> None:
    """Remembered by identity, an array is still only weakly held: kept to the next commit,
    every step's new 100 MB array came from fresh memory (issue 17's fixed-work bench lost a
    tenth of a second a step to it). While it lives, a second commit uploads nothing."""
    stored: dict[str, bytes] = {}
    enc = Encoder(lambda path, data: stored.__setitem__(path, bytes(data)))
    arr = np.arange(4096, dtype=np.int32)
    node, uploaded = enc.resolve(snapshot({"a": arr}))
    assert uploaded == arr.nbytes
    assert enc.resolve(snapshot({"a": arr})) == (node, 0)  # same object: neither hashed nor uploaded
    gc.disable()
    try:
        gone = weakref.ref(arr)
        del arr
        assert gone() is None
    finally:
        gc.enable()
    other = np.arange(1, 4097, dtype=np.int32)  # may get the dead array's id: must not pass for it
    node2, uploaded2 = enc.resolve(snapshot({"a": other}))
    assert uploaded2 == other.nbytes and node2 != node


def test_remembered_bytes_take_no_weak_reference_and_still_skip_the_upload() -> None:
    stored: dict[str, bytes] = {}
    enc = Encoder(lambda path, data: stored.__setitem__(path, bytes(data)))
    data = bytes(range(256)) * 16
    node, uploaded = enc.resolve(snapshot({"b": data}))
    assert uploaded == len(data)
    assert enc.resolve(snapshot({"b": data})) == (node, 0)


class _CountingPool(ThreadPoolExecutor):
    """A real thread pool that records how many bytes each leaf it was given holds."""

    def __init__(self) -> None:
        super().__init__(4)
        self.sizes: list[int] = []

    def map(self, fn: Any, *iterables: Any, **kwargs: Any) -> Any:
        leaves = list(iterables[0])
        self.sizes.extend(codec._leaf_size(leaf) for leaf in leaves)
        return super().map(fn, leaves, **kwargs)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.sampled_from([2_000, codec.POOL_BYTES - 8, codec.POOL_BYTES, codec.POOL_BYTES + 8, 3 * codec.POOL_BYTES]),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.sampled_from([0, codec.POOL_BYTES]),
)
def test_leaves_under_pool_bytes_stay_off_the_pool_and_the_commit_is_the_same(
    sizes: list[int], twin: bool, pool_bytes: int
) -> None:
    """Small leaves are stored on the commit thread (local stores: no handoff), all of them on
    the pool with pool_bytes 0 (gs://: requests overlap); what is stored and what the commit
    says does not depend on where a leaf was hashed, twins included."""
    values = [np.full(n // 8, i, dtype=np.int64) for i, n in enumerate(sizes)]
    if twin:
        values.append(values[-1].copy())  # equal bytes, another object: stored once
    alone: dict[str, bytes] = {}
    node_alone, up_alone = Encoder(lambda p, d: alone.__setitem__(p, bytes(d))).resolve(snapshot(values))
    pooled: dict[str, bytes] = {}
    enc = Encoder(lambda p, d: pooled.__setitem__(p, bytes(d)), pool_bytes=pool_bytes)
    with _CountingPool() as pool:
        node, up = enc.resolve(snapshot(values), pool)
    assert sorted(pool.sizes) == sorted(v.nbytes for v in values if v.nbytes >= pool_bytes)
    assert node == node_alone and up == up_alone and pooled == alone
    assert [np.array_equal(a, b) for a, b in zip(decode(node, pooled.__getitem__), values, strict=True)] == [
        True
    ] * len(values)


class _Small(BaseModel):
    pass


class _TwoSizes(Pipeline):
    name = "two-sizes"
    Params = _Small

    @step
    def make(self, ctx: Any) -> None:
        ctx["small"] = np.arange(1_000)  # 8 KB: an artifact, under POOL_BYTES
        ctx["large"] = np.arange(100_000)  # 800 KB


class _ThreadsOfPuts:
    """A real FileStore that notes on which thread each artifact was put."""

    def __init__(self, inner: Any, local: bool) -> None:
        self.inner, self.uri, self.local_puts = inner, inner.uri, local
        self.threads: dict[int, str] = {}

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        if "/artifacts/" in path:
            self.threads[memoryview(data).nbytes] = threading.current_thread().name
        self.inner.put(path, data, if_absent=if_absent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("local", [True, False])
def test_a_run_stores_small_artifacts_on_the_commit_thread_only_for_local_puts(tmp_path: Any, local: bool) -> None:
    from pipeline_runtime.storage.local import FileStore

    store = _ThreadsOfPuts(FileStore(f"file://{tmp_path}/ck"), local)
    _TwoSizes({}, checkpoint_uri=f"file://{tmp_path}/ck", store=store, run_id="sizes", retain="Always").run()
    assert store.threads[800_000].startswith("respawn-io")
    assert store.threads[8_000].startswith("respawn-commit" if local else "respawn-io")


def test_file_memory_and_wrapped_stores_say_their_puts_are_local(tmp_path: Any) -> None:
    from pipeline_runtime.chaos.store import PausingStore
    from pipeline_runtime.storage import open_store
    from pipeline_runtime.storage.base import local_puts

    for store in (open_store(f"file://{tmp_path}/ck"), open_store("memory://local-puts")):
        assert local_puts(store) and local_puts(PausingStore(store))  # chaos wraps stores

    class Remote:  # a store without the attribute (gs://: tests/runtime/test_gcs.py runs it for real)
        uri = "x://"

    assert not local_puts(Remote()) and not local_puts(PausingStore(Remote()))  # type: ignore[arg-type]
    assert Encoder(lambda p, d: None).pool_bytes == 0

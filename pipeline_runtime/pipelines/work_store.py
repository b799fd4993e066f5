"""Intermediate arrays (crop chunks) kept in storage instead of in the step context.

The runtime keeps the whole context in memory, so a context that grows with the
video (every crop of a two-hour video) would make memory grow with it. Steps
write each chunk here as one `.npy` object under a per-run prefix and keep only
a small reference ({path, xxh3_128, count}) in the context. A chunk's name ends
in its own checksum (`crops/000003-<16 hex>.npy`), so two attempts that write
chunk 3 (a stale pod still running, a resumed one) never overwrite each other's
bytes, whatever either cut; a reader checks the checksum before trusting a chunk.

The checksum is xxh3-128 (the `xxhash` package): these are scratch objects
guarded against torn writes and bit rot, not an adversary, and xxh3 checks
450 MB of crops in 0.02 s where sha256 took 0.26 s, time the decoder would wait.

Chunks are scratch: every one can be made again from the video, and the
pipeline does so when a chunk it needs is gone or fails its check (a node lost
with its disk, a host crash that tore a file, a finished run that deleted them).
So local writes skip fsync: forcing 450 MB of crops to disk while the decoder
runs cost extract_frames 3-10%, to protect data that is never lost for good.

Writes go through one background thread, so hashing and storage I/O of chunk N
overlap the decoding of chunk N+1; a step waits for a chunk's write before it
records that chunk in its progress. The buffers of finished writes are handed
out again by `buffer`, so a long step does not keep touching fresh memory.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import xxhash

from pipeline_runtime.storage import NotFound, Store, open_store
from pipeline_runtime.storage.base import Tidy


def npy_header(shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> bytes:
    """The `.npy` (format 1.0) header of a C-order array of this shape and dtype."""
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


class NpyBuffer:
    """A `.npy` file being built in place: fill `.array`, then store `.data` (no further copy)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any] | type = np.uint8) -> None:
        head = npy_header(shape, dtype)
        self._raw = bytearray(len(head) + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._raw[: len(head)] = head
        self.array: np.ndarray = np.frombuffer(self._raw, dtype=dtype, offset=len(head)).reshape(shape)
        """The array's cells, inside the file's bytes."""

    @property
    def data(self) -> memoryview:
        """The whole `.npy` file."""
        return memoryview(self._raw)


def npy_bytes(array: np.ndarray) -> bytes:
    """The `.npy` encoding of `array` (deterministic: header + C-order data)."""
    return npy_header(array.shape, array.dtype) + np.ascontiguousarray(array).tobytes()


class CorruptChunk(ValueError):
    """A stored chunk is missing, or does not match the checksum its reference recorded."""


class WorkStore:
    """Arrays under `<uri>/<prefix>/`, named by step-chosen name plus checksum, verified on read."""

    def __init__(self, uri: str, prefix: str, in_flight: int = 2) -> None:
        self.store: Store = open_store(uri, durable=False)  # scratch: a chunk lost in a host crash is made again
        self.prefix = prefix.strip("/")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="work-store")
        self._pending: deque[tuple[Future[dict[str, Any]], NpyBuffer]] = deque()
        self._in_flight = in_flight
        self._free: list[NpyBuffer] = []

    def _write(self, name: str, data: memoryview | bytes, count: int) -> dict[str, Any]:
        digest = xxhash.xxh3_128_hexdigest(data)
        path = f"{self.prefix}/{name}-{digest[:16]}.npy"
        self.store.put(path, data)
        return {"path": path, "xxh3_128": digest, "count": count}

    def _write_chunk(
        self, name: str, chunk: NpyBuffer, rows: int | None, after: Sequence[Future[Any]]
    ) -> dict[str, Any]:
        for future in after:
            future.result()  # a failed fill fails this write, and so the step
        if rows is None or rows == len(chunk.array):
            return self._write(name, chunk.data, len(chunk.array))
        return self._write(name, npy_bytes(chunk.array[:rows]), rows)  # a partial chunk: rare

    def buffer(self, shape: tuple[int, ...]) -> NpyBuffer:
        """An NpyBuffer of `shape` (uint8) to fill and `submit`: a finished write's, if one fits."""
        for i, buf in enumerate(self._free):
            if buf.array.shape == shape:
                return self._free.pop(i)
        return NpyBuffer(shape)

    def put(self, name: str, array: np.ndarray | NpyBuffer) -> dict[str, Any]:
        """Store `array` as `<prefix>/<name>-<checksum>.npy` now; returns the reference to keep in the context."""
        if isinstance(array, NpyBuffer):
            return self._write(name, array.data, int(array.array.shape[0]))
        return self._write(name, npy_bytes(array), int(array.shape[0]))

    def submit(
        self, name: str, chunk: NpyBuffer, rows: int | None = None, after: Sequence[Future[Any]] = ()
    ) -> list[dict[str, Any]]:
        """Queue a write of `chunk` (its first `rows` rows, default all), to start once every
        future in `after` is done (those still filling it); returns the references of
        earlier writes that have now finished, in order.

        At most `in_flight` writes are outstanding, which bounds the memory held.
        """
        self._pending.append((self._pool.submit(self._write_chunk, name, chunk, rows, after), chunk))
        done = []
        while len(self._pending) >= self._in_flight:
            done.append(self._finish())
        return done + self.collect()

    def collect(self) -> list[dict[str, Any]]:
        """The references of the writes that have finished, in order, without waiting."""
        done = []
        while self._pending and self._pending[0][0].done():
            done.append(self._finish())
        return done

    def drain(self) -> list[dict[str, Any]]:
        """Wait for every queued write; their references, in order."""
        done = []
        while self._pending:
            done.append(self._finish())
        return done

    def _finish(self) -> dict[str, Any]:
        future, chunk = self._pending.popleft()
        ref = future.result()
        if len(self._free) < self._in_flight + 1:
            self._free.append(chunk)
        return ref

    def close(self) -> None:
        """Stop the writer thread (after the writes already queued)."""
        self._pool.shutdown(wait=True)

    def restore(self, ref: dict[str, Any], array: np.ndarray) -> None:
        """Write `array` back under `ref` (a chunk made again); CorruptChunk unless it has the recorded bytes."""
        data = npy_bytes(array)
        if xxhash.xxh3_128_hexdigest(data) != ref["xxh3_128"]:
            raise CorruptChunk(f"{self.store.uri}/{ref['path']} was lost, and making it again gave different bytes")
        self.store.put(ref["path"], data)

    def get(self, ref: dict[str, Any]) -> np.ndarray:
        """Load a chunk by reference; CorruptChunk if its bytes changed."""
        try:
            data = self.store.get(ref["path"])
        except NotFound:
            raise CorruptChunk(f"{self.store.uri}/{ref['path']} is gone") from None
        if xxhash.xxh3_128_hexdigest(data) != ref["xxh3_128"]:
            raise CorruptChunk(f"{self.store.uri}/{ref['path']} does not match its checksum")
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return array

    def clear(self) -> int:
        """Delete everything under the prefix; returns how many objects went."""
        paths = self.store.list(self.prefix + "/")
        for path in paths:
            self.store.delete(path)
        self._remove_empty_folders()
        return len(paths)

    def _remove_empty_folders(self) -> None:
        if isinstance(self.store, Tidy):  # a local folder keeps empty folders and killed writes' temporaries
            self.store.tidy(self.prefix)

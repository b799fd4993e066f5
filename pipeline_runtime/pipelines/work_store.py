"""Intermediate arrays (crop chunks) kept in storage instead of in the step context.

The runtime keeps the whole context in memory, so a context that grows with the
video (every crop of a two-hour video) would make memory grow with it. Steps
write each chunk here as one `.npy` object under a per-run prefix and keep only
a small reference ({path, sha256, count}) in the context. Names are
deterministic and contents are a pure function of the input, so a resumed
attempt that writes a chunk again writes the same bytes (idempotent), and a
reader checks the sha256 before trusting a chunk.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from pipeline_runtime.storage import Store, open_store


def npy_bytes(array: np.ndarray) -> bytes:
    """The `.npy` encoding of `array` (deterministic: header + C-order data)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class CorruptChunk(ValueError):
    """A stored chunk does not match the checksum its reference recorded."""


class WorkStore:
    """Arrays under `<uri>/<prefix>/`, addressed by name, verified by sha256."""

    def __init__(self, uri: str, prefix: str) -> None:
        self.store: Store = open_store(uri)
        self.prefix = prefix.strip("/")

    def put(self, name: str, array: np.ndarray) -> dict[str, Any]:
        """Store `array` as `<prefix>/<name>.npy`; returns the reference to keep in the context."""
        data = npy_bytes(array)
        path = f"{self.prefix}/{name}.npy"
        self.store.put(path, data)
        return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "count": int(array.shape[0])}

    def get(self, ref: dict[str, Any]) -> np.ndarray:
        """Load a chunk by reference; CorruptChunk if its bytes changed."""
        data = self.store.get(ref["path"])
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise CorruptChunk(f"{self.store.uri}/{ref['path']} does not match its checksum")
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return array

    def clear(self) -> int:
        """Delete everything under the prefix; returns how many objects went."""
        paths = self.store.list(self.prefix + "/")
        for path in paths:
            self.store.delete(path)
        return len(paths)

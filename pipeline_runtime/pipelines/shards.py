"""Dataset output: deterministic `.npz` shards and the `manifest.jsonl` index.

`numpy.savez` stamps the current time into every zip entry, so two runs over the
same crops would write different bytes. Shards here are written with a fixed
timestamp and no compression: the same crops always give the same shard bytes,
which is what makes re-writing a shard after a resume harmless.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from .work_store import npy_header

MANIFEST = "manifest.jsonl"
"""Name of the manifest under `output_uri`; written after every shard (the commit point)."""

_EPOCH = (1980, 1, 1, 0, 0, 0)


def shard_name(number: int) -> str:
    """File name of shard `number`: `shard-00000.npz`, ..."""
    return f"shard-{number:05d}.npz"


def encode_shard(images: np.ndarray, crop_index: np.ndarray) -> memoryview:
    """An `.npz` holding `images` (n, s, s, 3) uint8 BGR and `crop_index` (n,) int64, byte-deterministic.

    The arrays are streamed into the zip (no intermediate `.npy` copies); the
    result is a view of the one buffer that holds the file.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in (("images", images), ("crop_index", crop_index)):
            arr = np.ascontiguousarray(arr)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(npy_header(arr.shape, arr.dtype))
                f.write(arr.data)
    return buf.getbuffer()


def manifest_line(entry: dict[str, Any]) -> str:
    """One manifest line: compact JSON with sorted keys (stable bytes), newline-terminated."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"


def read_manifest(data: bytes) -> list[dict[str, Any]]:
    """Parse a manifest back into entries."""
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

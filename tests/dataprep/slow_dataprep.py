"""The dataprep pipeline, slowed down so a test can stop it in the middle of a step.

`pipeline-runtime run tests.dataprep.slow_dataprep:SlowDataPrep` runs exactly the
`dataprep` definition (same name, version and steps, so its checkpoints resume
under plain `dataprep` and vice versa); only decoding or skipping a frame and encoding a
shard take longer, by DATAPREP_SLOW_FRAME_S and DATAPREP_SLOW_SHARD_S seconds.
"""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline_runtime.pipelines import shards, video_io
from pipeline_runtime.pipelines.dataprep import DataPrepPipeline

_FRAME_S = float(os.environ.get("DATAPREP_SLOW_FRAME_S", "0"))
_SHARD_S = float(os.environ.get("DATAPREP_SLOW_SHARD_S", "0"))
_read = video_io.FrameReader.read
_skip = video_io.FrameReader.skip
_encode = shards.encode_shard


def _slow_read(self: video_io.FrameReader) -> np.ndarray | None:
    time.sleep(_FRAME_S)
    return _read(self)


def _slow_skip(self: video_io.FrameReader, count: int) -> bool:
    time.sleep(_FRAME_S * count)
    return _skip(self, count)


def _slow_encode(images: np.ndarray, crop_index: np.ndarray) -> memoryview:
    time.sleep(_SHARD_S)
    return _encode(images, crop_index)


video_io.FrameReader.read = _slow_read  # type: ignore[method-assign]
video_io.FrameReader.skip = _slow_skip  # type: ignore[method-assign]
shards.encode_shard = _slow_encode


class SlowDataPrep(DataPrepPipeline):
    """`dataprep` with per-frame and per-shard delays (see the module docstring)."""

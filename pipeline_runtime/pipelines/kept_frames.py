"""What `extract_frames` has kept so far, and which part of it its progress may list.

Per kept frame it records the frame's index and fingerprint and, when the boxes
follow from the frame size alone (center and grid modes), the frame's crops:
those pixels are all the later steps need of the frame, and cutting them while
the frame is decoded spares `crop` a second decode of the whole video.

Only decoding happens on the step's thread. Decoded frames go, `BATCH` at a time,
to a cutter thread that fingerprints them and copies their crops into the chunk
being filled; a full chunk goes to the work store's writer thread. Decoding is
the one cost the step cannot avoid, so everything else runs beside it: on 2 CPUs
fingerprint and cut took 0.1 s of a 1 s decode of 3000 640x480 frames when done
inline, and the handoff costs the decoding thread ~5 us a frame.

The state that progress may list (`state()`) lags the decoder: it covers the
frames up to the end of the last chunk whose write has finished, never a frame
whose crops could still be lost.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from . import regions
from .video_io import FINGERPRINT_BYTES, fingerprint
from .work_store import NpyBuffer, WorkStore

CHUNK_BYTES = 64 << 20
"""Upper bound on one chunk of crops in memory (a big `chunk_size` times big crops)."""

BATCH = 8
"""Frames handed to the cutter thread at a time."""

CUTS_IN_FLIGHT = 2
"""Batches the cutter may have queued before `add` waits: bounds the decoded frames held."""

Box = tuple[int, int, int, int]


class KeptFrames:
    """Kept frames of one extract_frames attempt, resumed from its saved progress `state`."""

    def __init__(
        self,
        state: dict[str, Any],
        chunk_size: int,
        crop_size: int,
        boxes: list[Box] | None = None,
        work: WorkStore | None = None,
    ) -> None:
        self.next_frame: int = state["next_frame"]
        """Decoder position the listed state reaches: a resumed attempt starts decoding here."""
        self.index: list[np.ndarray] = list(state["index"])
        self.fingerprint: list[np.ndarray] = list(state["fingerprint"])
        self.windows: list[dict[str, Any]] = list(state["windows"])
        """Work-store references of the stored crop chunks (center and grid modes)."""
        self.count = sum(len(c) for c in self.index)
        """Frames kept so far, listed or not."""
        if (boxes is None) != (work is None):
            raise ValueError("boxes and work go together")
        self.boxes, self.work, self.crop_size = boxes, work, crop_size
        self.per_chunk = chunk_size
        """Frames per chunk: `chunk_size` crops' worth of whole frames, at most CHUNK_BYTES."""
        if boxes:
            frame_bytes = len(boxes) * crop_size * crop_size * 3
            self.per_chunk = max(1, min(chunk_size // len(boxes), CHUNK_BYTES // frame_bytes))
        # (box, its rows and columns if cutting it is a plain copy)
        self._cuts_of: list[tuple[Box, tuple[slice, slice] | None]] = [
            (
                box,
                (slice(box[1], box[1] + box[3]), slice(box[0], box[0] + box[2]))
                if box[2] == box[3] == crop_size
                else None,
            )
            for box in boxes or []
        ]
        self._idx: list[int] = []
        self._batch: list[np.ndarray] = []
        self._fps = np.empty((self.per_chunk, FINGERPRINT_BYTES), np.uint8)  # filled by the cutter
        self._cuts: list[Future[None]] = []  # this chunk's batches
        self._queued: deque[Future[None]] = deque()  # batches the cutter may not have done yet
        self._cutter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-cut")
        self._chunk: NpyBuffer | None = None
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()

    def close(self) -> None:
        """Stop the cutter thread (after the batches already queued)."""
        self._cutter.shutdown(wait=True)

    @property
    def anchor(self) -> tuple[int, bytes] | None:
        """(index, fingerprint) of the last listed frame: where a resumed decoder can verify a seek."""
        if not self.index:
            return None
        return int(self.index[-1][-1]), bytes(self.fingerprint[-1][-1])

    @property
    def full(self) -> bool:
        """The buffered frames make a whole chunk."""
        return len(self._idx) >= self.per_chunk

    def add(self, index: int, frame: np.ndarray) -> None:
        """Keep frame `index`: its fingerprint and, with boxes, its crops (both made on the cutter thread)."""
        if self.boxes and self._chunk is None:
            assert self.work is not None
            self._chunk = self.work.buffer((self.per_chunk * len(self.boxes), self.crop_size, self.crop_size, 3))
        self._idx.append(index)
        self._batch.append(frame)
        self.count += 1
        if len(self._batch) == BATCH:
            self._hand_on()

    def _hand_on(self) -> None:
        first = len(self._idx) - len(self._batch)
        out = self._chunk.array if self._chunk is not None else None
        cut = self._cutter.submit(self._cut, self._batch, first, out, self._fps)
        self._batch = []
        self._cuts.append(cut)
        self._queued.append(cut)
        while len(self._queued) > CUTS_IN_FLIGHT or (self._queued and self._queued[0].done()):
            self._queued.popleft().result()

    def _cut(self, frames: list[np.ndarray], first: int, out: np.ndarray | None, fps: np.ndarray) -> None:
        # On the cutter thread: xxh3 and numpy's copies release the GIL.
        for i, frame in enumerate(frames, first):
            fps[i] = np.frombuffer(fingerprint(frame), np.uint8)
        if self._cuts_of:
            assert out is not None
            row = first * len(self._cuts_of)
            for frame in frames:
                for box, rows_cols in self._cuts_of:
                    out[row] = frame[rows_cols] if rows_cols is not None else regions.cut(frame, box, self.crop_size)
                    row += 1

    def flush(self, position: int, wait: bool) -> bool:
        """Hand on the buffered frames (decoder now at `position`); True if `state()` moved.

        Without boxes the frames are listed once fingerprinted. With boxes their
        chunk is queued for writing, to start once the cutter has filled it; the
        decoding thread does not wait for either. `wait` blocks until every queued
        chunk is stored.
        """
        moved = False
        if self._idx:
            if self._batch:
                self._hand_on()
            kept, idx, fps, cuts = len(self._idx), np.asarray(self._idx, dtype=np.int64), self._fps, self._cuts
            self._idx, self._cuts = [], []
            self._fps = np.empty((self.per_chunk, FINGERPRINT_BYTES), np.uint8)
            if self.work is None:
                for cut in cuts:
                    cut.result()
                self._list(position, idx, fps[:kept], None)
                moved = True
            else:
                assert self._chunk is not None and self.boxes is not None
                chunk, self._chunk = self._chunk, None
                self._pending.append((position, idx, fps[:kept]))
                name = f"windows/{len(self.windows) + len(self._pending) - 1:06d}"
                moved = self._settle(self.work.submit(name, chunk, rows=kept * len(self.boxes), after=cuts))
        if self.work is not None:
            moved = self._settle(self.work.drain() if wait else self.work.collect()) or moved
        return moved

    def _settle(self, refs: list[dict[str, Any]]) -> bool:
        # A chunk's write waited for its cuts, so its fingerprints are complete too.
        for ref in refs:
            position, idx, fps = self._pending.popleft()
            self._list(position, idx, fps, ref)
        return bool(refs)

    def _list(self, position: int, idx: np.ndarray, fps: np.ndarray, ref: dict[str, Any] | None) -> None:
        self.index.append(idx)
        self.fingerprint.append(fps)
        if ref is not None:
            self.windows.append(ref)
        self.next_frame = position

    def state(self, resumed_at: list[int]) -> dict[str, Any]:
        """The progress to save: only frames whose crops are stored."""
        return {
            "next_frame": self.next_frame,
            "index": list(self.index),
            "fingerprint": list(self.fingerprint),
            "windows": list(self.windows),
            "resumed_at": resumed_at,
        }

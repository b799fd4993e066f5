"""Video input: fetching a video to a local, checksummed file, probing it, and
decoding exactly the frames a step needs.

Whole decoded frames are never persisted: at 640x480 one frame is 0.9 MB raw,
so a 3000-frame clip is 2.7 GB, while the compressed source is ~20 MB and
decodes at thousands of frames per second. The checksummed source video is the
durable frame store; a step that needs pixels `extract_frames` did not keep
decodes it again, and every decoded frame is checked against the fingerprint
recorded by `extract_frames`, so a seek that lands on the wrong frame (or a
decoder that changed) is caught, not silently turned into different crops.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import xxhash

FINGERPRINT_BYTES = 16
"""Length of a frame fingerprint (a truncated sha256)."""

TICK_FRAMES = 32
"""While skipping, `FrameReader.tick` is called every this many frames."""


class VideoError(ValueError):
    """The video is missing, unreadable, or not what the checkpoint recorded."""


@dataclass(frozen=True)
class VideoInfo:
    """What `open_video` records about the source."""

    fps: float
    """Frames per second from the container (0.0 if unknown)."""
    frame_count: int
    """Frame count from the container; `extract_frames` counts the real one."""
    width: int
    """Frame width in pixels."""
    height: int
    """Frame height in pixels."""
    fourcc: str
    """Codec tag, e.g. `mp4v` or `MJPG`."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, for the step context."""
        return {
            "fps": self.fps,
            "frame_count": self.frame_count,
            "width": self.width,
            "height": self.height,
            "fourcc": self.fourcc,
        }


def split_uri(uri: str) -> tuple[str | None, str]:
    """Split `gs://b/dir/v.mp4` into (`gs://b/dir`, `v.mp4`); a local file gives (None, path).

    `file://` URIs and plain paths are local files: they are read in place.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else uri
        return None, os.path.abspath(path)
    head, sep, name = uri.rpartition("/")
    if not sep or not name or head.endswith(":/"):
        raise VideoError(f"{uri!r} does not name an object")
    return head, name


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fetch_video(uri: str, cache_dir: pathlib.Path, expect_sha256: str | None = None) -> tuple[str, str]:
    """Return (local path, sha256) of the video at `uri`.

    Remote videos are downloaded into `cache_dir` once (named by URI, so a later
    step in the same pod reuses the copy). With `expect_sha256` (a resumed run in
    a new pod), a copy whose checksum differs is an error: the source changed
    under the run, and crops cut from it would not match the checkpoint.
    """
    from pipeline_runtime.storage import NotFound, open_store

    base, name = split_uri(uri)
    if base is None:
        if not os.path.isfile(name):
            raise VideoError(f"no such file: {name}")
        path = name
    else:
        path = str(cache_dir / "videos" / hashlib.sha256(uri.encode()).hexdigest()[:16] / name)
        if not os.path.isfile(path):
            try:
                data = open_store(base).get(name)
            except NotFound:
                raise VideoError(f"no such object: {uri}") from None
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".part"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    digest = sha256_file(path)
    if expect_sha256 is not None and digest != expect_sha256:
        raise VideoError(f"{uri} changed since open_video (sha256 {digest[:12]}, recorded {expect_sha256[:12]})")
    return path, digest


def probe(path: str) -> VideoInfo:
    """Open the file with OpenCV and read its metadata; fail unless a first frame decodes."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoError(f"{path} is not a readable video")
        ok, frame = cap.read()
        if not ok or frame is None or frame.ndim != 3:
            raise VideoError(f"{path} is not a readable video (no frame decodes)")
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")
        return VideoInfo(
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
            fourcc=fourcc,
        )
    finally:
        cap.release()


def fingerprint(frame: np.ndarray) -> bytes:
    """A cheap identity for a decoded frame: xxh3-128 of all its pixels (16 bytes).

    It only has to catch a decoder that landed on the wrong frame, not an
    adversary. xxh3 hashes a 640x480 frame in 16 us, against 0.3 ms to decode it;
    sha256 of even a 1/16 pixel sample took 0.12 ms.
    """
    return xxhash.xxh3_128_digest(np.ascontiguousarray(frame).data)


def decoder_threads() -> int:
    """Decoder threads: every CPU this process may use but one.

    The spare CPU is for the threads that fingerprint, cut and store what the
    decoder produces. Measured on 2 CPUs: FFmpeg's default (a thread per CPU)
    decoded a 640x480 mp4v no faster than one thread alone, but burned 20% more
    CPU, which the other threads then lacked. FFmpeg's decoders give
    bit-identical frames for any thread count, so frames fingerprinted on one
    machine still match when a resumed attempt decodes them on another.
    """
    return max(1, len(os.sched_getaffinity(0)) - 1)


class FrameReader:
    """Sequential decoder with a verified seek."""

    def __init__(self, path: str, tick: Callable[[], None] | None = None) -> None:
        self.path = path
        self.tick = tick
        """Called every TICK_FRAMES frames skipped: a long skip (big stride, seek by decoding)
        must still reach a point where the step can notice a SIGTERM."""
        self._cap = self._open()
        self._pending: np.ndarray | None = None
        self.position = 0
        """Index of the frame the next `read` returns."""
        self.seeks = 0
        """Seeks that landed where expected (for tests and logs)."""
        self.fallbacks = 0
        """Seeks that missed and were redone by decoding from the start."""

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, decoder_threads()])
        if not cap.isOpened():  # a build without FFmpeg: whatever backend OpenCV picks
            cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise VideoError(f"{self.path} is not a readable video")
        return cap

    def close(self) -> None:
        """Release the decoder."""
        self._cap.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> np.ndarray | None:
        """Decode the next frame, or None at the end of the stream."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self.position += 1
            return frame
        ok, frame = self._cap.read()
        if not ok:
            return None
        self.position += 1
        return frame

    def skip(self, count: int) -> bool:
        """Advance up to `count` frames without colour conversion; False if the stream ended first."""
        for n in range(count):
            if self.tick is not None and n % TICK_FRAMES == TICK_FRAMES - 1:
                self.tick()
            if self._pending is not None:
                self._pending = None
            elif not self._cap.grab():
                return False
            self.position += 1
        return True

    def skip_exactly(self, count: int) -> None:
        """`skip`, but a stream that ends first is an error."""
        if not self.skip(count):
            raise VideoError(f"{self.path} ended at frame {self.position}")

    def seek(self, index: int, anchor: tuple[int, bytes] | None = None) -> None:
        """Move so that the next `read` returns frame `index`.

        Container seeks are not frame-exact for every codec, so a seek is trusted
        only when `anchor` = (frame index <= `index`, its fingerprint) is given and
        the frame decoded there matches; otherwise decode from the start and skip.
        """
        if index == self.position:
            return
        self._pending = None
        if anchor is not None and 0 < anchor[0] <= index:
            at, expected = anchor
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, at)
            ok, frame = self._cap.read()
            if ok and fingerprint(frame) == expected:
                self.seeks += 1
                if at == index:
                    self._pending, self.position = frame, at
                else:
                    self.position = at + 1
                    self.skip_exactly(index - self.position)
                return
            self.fallbacks += 1
        if index < self.position or anchor is not None:
            self._cap.release()
            self._cap = self._open()
            self.position = 0
        self.skip_exactly(index - self.position)


def iter_frames(
    path: str, indices: np.ndarray, fingerprints: np.ndarray, start: int = 0, tick: Callable[[], None] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (position, frame) for the kept frames `indices[start:]`, each verified.

    `fingerprints[i]` is what `extract_frames` recorded for `indices[i]`; a frame
    that decodes differently now raises VideoError instead of yielding wrong pixels.
    """
    if start >= len(indices):
        return
    with FrameReader(path, tick) as reader:
        first = int(indices[start])
        reader.seek(first, anchor=(first, bytes(fingerprints[start])))
        for pos in range(start, len(indices)):
            index = int(indices[pos])
            reader.skip_exactly(index - reader.position)
            frame = reader.read()
            if frame is None:
                raise VideoError(f"{path} ended before frame {index}")
            if fingerprint(frame) != bytes(fingerprints[pos]):
                raise VideoError(f"frame {index} of {path} decodes differently than when it was extracted")
            yield pos, frame

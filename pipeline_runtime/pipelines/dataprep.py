"""DataPrepPipeline: turn a video into a dataset of image crops, surviving preemption.

Steps (names are a contract): open_video, extract_frames, detect_regions, crop,
augment, write_dataset. See docs/dataprep.md for params, output layout, and why
frames are re-decoded from the checksummed source instead of being stored.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline_runtime import InvalidInput, Pipeline, StepContext, step
from pipeline_runtime.storage import open_store
from pipeline_runtime.storage.base import Tidy

from . import augment as aug
from . import regions, shards
from .kept_frames import KeptFrames
from .video_io import (
    TICK_FRAMES,
    FrameReader,
    VideoError,
    fetch_video,
    iter_frames,
    probe,
)
from .work_store import CorruptChunk, WorkStore

log = logging.getLogger(__name__)

_URI_SCHEMES = ("", "file", "gs", "memory")


def _check_uri(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    scheme = urlparse(value).scheme
    if scheme not in _URI_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r}: use a path, file://, or gs://")
    return value


class DataPrepParams(BaseModel):
    """Parameters of the `dataprep` pipeline."""

    model_config = ConfigDict(extra="forbid")

    video_uri: str
    """The source video: a path, `file:///...`, or `gs://bucket/object`."""
    output_uri: str
    """Where the dataset goes: a folder path, `file:///...`, or `gs://bucket/prefix`."""
    frame_stride: int = Field(default=1, ge=1)
    """Keep every N-th frame (1 keeps all)."""
    crop_size: int = Field(default=224, ge=8, le=4096)
    """Side of the square crops, in pixels."""
    mode: regions.Mode = "center"
    """Regions to crop: `center` (one centred square), `grid` (tiles), `faces` (Haar cascade)."""
    max_frames: int | None = Field(default=None, ge=1)
    """Stop after keeping this many frames (None: the whole video)."""
    augmentations: list[aug.Augmentation] = Field(default_factory=lambda: list(aug.ALL))
    """Which of flip, rotate, brightness, contrast to apply; [] writes the crops unchanged."""
    seed: int = Field(default=0, ge=0)
    """Seed of the per-crop augmentation draws."""
    shard_size: int = Field(default=256, ge=1)
    """Crops per output shard."""
    chunk_size: int = Field(default=64, ge=1, le=4096)
    """Frames (or crops) per unit of intra-step progress and per stored work chunk."""
    work_uri: str | None = None
    """Where intermediate crop chunks live during the run (default: `<output_uri>/_work/`); removed at the end."""

    @field_validator("video_uri", "output_uri", "work_uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        return None if value is None else _check_uri(value)

    @field_validator("mode")
    @classmethod
    def _mode_runs_here(cls, value: str) -> str:
        if value == "faces" and (reason := regions.faces_unavailable()):
            raise ValueError(reason)
        return value

    @field_validator("augmentations")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each augmentation may appear once")
        return value


class _Heartbeat:
    """Re-saves a step's last consistent progress at most every `seconds`.

    `ctx.save_progress` is where a step notices SIGTERM; a step that saves only per
    chunk could go for minutes without one (a large stride on a 4K video), past a
    pod's grace period. Saving the unchanged state is cheap: the runtime only
    uploads when it decides to commit.
    """

    def __init__(self, ctx: StepContext, state: dict[str, Any], seconds: float = 1.0) -> None:
        self.ctx = ctx
        self.state = state
        self.seconds = seconds
        self._last = time.monotonic()

    def save(self, state: dict[str, Any]) -> None:
        """Record a new consistent state and save it now."""
        self.state = state
        self._last = time.monotonic()
        self.ctx.save_progress(state)

    def due(self) -> bool:
        """True when the last save is `seconds` old."""
        return time.monotonic() - self._last >= self.seconds

    def __call__(self) -> None:
        if self.due():
            self._last = time.monotonic()
            self.ctx.save_progress(self.state)


class DataPrepPipeline(Pipeline):
    """Video -> frames -> regions -> crops -> augmented crops -> sharded dataset + manifest."""

    name = "dataprep"
    output_param = "output_uri"
    version = "2"  # 2: xxh3 frame fingerprints and work chunks, crops cut in extract_frames
    Params = DataPrepParams
    _video_cache: tuple[str, str] | None = None  # (sha256, local path) of the fetched video

    # -- 1 -------------------------------------------------------------------
    @step
    def open_video(self, ctx: StepContext) -> None:
        """Fetch the video (checksummed) and record its metadata."""
        p: DataPrepParams = ctx.params
        try:
            path, digest = fetch_video(p.video_uri, ctx.scratch_dir)
            info = probe(path)
        except VideoError as e:
            raise InvalidInput(f"video_uri: {e}") from None
        ctx["video"] = {"uri": p.video_uri, "sha256": digest, **info.to_json()}
        log.info(
            "open_video: %s %dx%d %s, %d frames at %.3g fps",
            p.video_uri,
            info.width,
            info.height,
            info.fourcc,
            info.frame_count,
            info.fps,
        )

    # -- 2 -------------------------------------------------------------------
    @step
    def extract_frames(self, ctx: StepContext) -> None:
        """Decode the video once, keep every `frame_stride`-th frame: its index, its fingerprint
        and, in center and grid modes, its crops.

        The boxes of center and grid follow from the frame size alone, so the
        pixels the later steps need are cut here, while each frame is decoded,
        and go to the work store in chunks; crop then has nothing left to decode.
        Progress (decoder position, the frames kept, the chunks stored) is saved
        after every chunk and at least once a second.
        """
        p: DataPrepParams = ctx.params
        path = self._local_video(ctx)
        video = ctx["video"]
        boxes = regions.geometry_boxes(p.mode, video["width"], video["height"], p.crop_size)
        state = ctx.progress or {"next_frame": 0, "index": [], "fingerprint": [], "windows": [], "resumed_at": []}
        resumed_at: list[int] = list(state["resumed_at"])
        work = self._work(ctx) if boxes else None
        kept = KeptFrames(state, p.chunk_size, p.crop_size, boxes, work)
        limit = p.max_frames
        beat = _Heartbeat(ctx, state)
        try:
            with FrameReader(path, tick=beat) as reader:
                if ctx.progress is not None:
                    resumed_at.append(kept.next_frame)
                    reader.seek(kept.next_frame, anchor=kept.anchor)
                    log.warning(
                        "extract_frames: resuming at frame %d (%d frames kept so far, seek %s)",
                        kept.next_frame,
                        kept.count,
                        "verified" if reader.seeks else "by decoding from 0",
                    )
                reader.tick = None  # from here on the loop below saves progress itself
                done = limit is not None and kept.count >= limit
                while not done:
                    if reader.position % p.frame_stride:
                        # grab() skips colour conversion: cheaper than read() for dropped frames.
                        step_over = min(p.frame_stride - reader.position % p.frame_stride, TICK_FRAMES)
                        if not reader.skip(step_over):
                            break
                    else:
                        frame = reader.read()
                        if frame is None:
                            break
                        kept.add(reader.position - 1, frame)
                        done = limit is not None and kept.count >= limit
                        ctx.report(reader.position, video["frame_count"] or None, "frames decoded")
                    if kept.full and not done:
                        if kept.flush(reader.position, wait=False):
                            beat.save(kept.state(resumed_at))
                    elif done or beat.due():
                        kept.flush(reader.position, wait=True)
                        beat.save(kept.state(resumed_at))
                kept.flush(reader.position, wait=True)
                decoded = reader.position
        finally:
            kept.close()
            if work is not None:
                work.close()
        if not kept.index:
            raise InvalidInput(f"video_uri: no frame of {p.video_uri} could be decoded")
        ctx["frames"] = {
            "index": np.concatenate(kept.index),
            "fingerprint": np.concatenate(kept.fingerprint),
            "windows": kept.windows,
            "decoded": decoded,
        }
        # Where it resumed is logged, not kept in ctx: a resumed run's context equals an
        # uninterrupted run's (pipeline-runtime chaos checks exactly that).
        log.info(
            "extract_frames: kept %d of %d decoded frames%s%s",
            kept.count,
            decoded,
            f", cut their {p.mode} crops into {len(kept.windows)} chunks" if boxes else "",
            f"; resumed at frames {resumed_at}" if resumed_at else "",
        )

    # -- 3 -------------------------------------------------------------------
    @step
    def detect_regions(self, ctx: StepContext) -> None:
        """Boxes per kept frame: from the frame size (center, grid) or a face detector (faces)."""
        p: DataPrepParams = ctx.params
        frames = ctx["frames"]
        n = len(frames["index"])
        width, height = ctx["video"]["width"], ctx["video"]["height"]
        per_frame = regions.geometry_boxes(p.mode, width, height, p.crop_size)
        if per_frame is not None:
            boxes = np.tile(np.asarray(per_frame, dtype=np.int32), (n, 1))
            owner = np.repeat(np.arange(n, dtype=np.int64), len(per_frame))
        else:
            boxes, owner = self._detect_faces(ctx, n)
        ctx["regions"] = {"boxes": boxes.reshape(-1, 4), "frame_pos": owner}
        log.info("detect_regions: %d boxes in %d frames (mode %s)", len(owner), n, p.mode)

    def _detect_faces(self, ctx: StepContext, n: int) -> tuple[np.ndarray, np.ndarray]:
        p: DataPrepParams = ctx.params
        frames = ctx["frames"]
        state = ctx.progress or {"next": 0, "boxes": [], "owner": []}
        box_chunks, owner_chunks = list(state["boxes"]), list(state["owner"])
        detector = regions.FaceDetector()
        buf_boxes: list[tuple[int, int, int, int]] = []
        buf_owner: list[int] = []
        path = self._local_video(ctx)
        start = state["next"]
        beat = _Heartbeat(ctx, state)
        for pos, frame in iter_frames(path, frames["index"], frames["fingerprint"], start, tick=beat):
            found = detector.detect(frame)
            buf_boxes.extend(found)
            buf_owner.extend([pos] * len(found))
            if (pos + 1 - start) % p.chunk_size == 0 or pos + 1 == n or beat.due():
                box_chunks.append(np.asarray(buf_boxes, dtype=np.int32).reshape(-1, 4))
                owner_chunks.append(np.asarray(buf_owner, dtype=np.int64))
                buf_boxes, buf_owner = [], []
                beat.save({"next": pos + 1, "boxes": list(box_chunks), "owner": list(owner_chunks)})
        boxes = np.concatenate(box_chunks) if box_chunks else np.zeros((0, 4), np.int32)
        owner = np.concatenate(owner_chunks) if owner_chunks else np.zeros(0, np.int64)
        return boxes, owner

    # -- 4 -------------------------------------------------------------------
    @step
    def crop(self, ctx: StepContext) -> None:
        """Every box as a `crop_size` square, in work-store chunks.

        In center and grid modes extract_frames already cut them: crop checks its
        chunks are all still there and takes them over. Otherwise (faces mode, or
        a rerun after a finished run deleted the chunks) it decodes the frames that
        have boxes and cuts them, in chunks of `chunk_size` crops. Chunk c always
        holds boxes [c*chunk_size, (c+1)*chunk_size), so a resumed attempt
        continues at the first chunk its progress does not list.
        """
        p: DataPrepParams = ctx.params
        frames, found = ctx["frames"], ctx["regions"]
        boxes, owner = found["boxes"], found["frame_pos"]
        total, size, per = len(owner), p.crop_size, p.chunk_size
        if ctx.progress is None and frames["windows"]:
            cut, store = frames["windows"], self._work(ctx).store
            gone = [ref["path"] for ref in cut if not store.exists(ref["path"])]
            if not gone and sum(ref["count"] for ref in cut) == total:
                ctx["crops"] = {"chunks": cut, "count": total, "crop_size": size, "cut_in": "extract_frames"}
                log.info("crop: %d crops in %d chunks, cut by extract_frames", total, len(cut))
                return
            log.warning(
                "crop: %d of the %d chunks extract_frames cut are gone (a finished run deletes them); "
                "cutting again from the video",
                len(gone),
                len(cut),
            )
        state = ctx.progress or {"chunks": [], "resumed_at_chunk": []}
        refs: list[dict[str, Any]] = list(state["chunks"])
        resumed_at = list(state["resumed_at_chunk"]) + ([len(refs)] if ctx.progress is not None else [])
        if ctx.progress is not None:
            log.warning("crop: resuming after chunk %d (%d chunks stored)", len(refs), len(refs))
        done = len(refs) * per
        positions = np.unique(owner[done:]) if done < total else np.zeros(0, np.int64)
        first_box = np.searchsorted(owner, positions, side="left")
        number, chunk, fill = len(refs), None, 0
        beat = _Heartbeat(ctx, {"chunks": list(refs), "resumed_at_chunk": resumed_at})
        work = self._work(ctx)
        try:
            for k, (_, frame) in enumerate(
                iter_frames(
                    self._local_video(ctx), frames["index"][positions], frames["fingerprint"][positions], tick=beat
                )
            ):
                b = max(int(first_box[k]), done)
                while b < total and owner[b] == positions[k]:
                    if chunk is None:
                        chunk, fill = work.buffer((min(per, total - number * per), size, size, 3)), 0
                    chunk.array[fill] = regions.cut(frame, boxes[b], size)
                    fill, b = fill + 1, b + 1
                    if fill == len(chunk.array):
                        finished = work.submit(f"crops/{number:06d}", chunk)
                        number, chunk = number + 1, None
                        if finished:
                            refs.extend(finished)
                            beat.save({"chunks": list(refs), "resumed_at_chunk": resumed_at})
                beat()
            refs.extend(work.drain())
        finally:
            work.close()
        ctx["crops"] = {"chunks": refs, "count": total, "crop_size": size, "cut_in": "crop"}
        log.info(
            "crop: %d crops in %d chunks%s", total, len(refs), f"; resumed at chunks {resumed_at}" if resumed_at else ""
        )

    # -- 5 -------------------------------------------------------------------
    @step
    def augment(self, ctx: StepContext) -> None:
        """Apply the seeded per-crop augmentation; record each draw and each result's sha256."""
        p: DataPrepParams = ctx.params
        crops = ctx["crops"]
        state = ctx.progress or {"chunks": [], "draws": [], "sha256": []}
        refs, draws, digests = list(state["chunks"]), list(state["draws"]), list(state["sha256"])
        base = sum(r["count"] for r in refs)
        work = self._work(ctx)
        try:
            for c in range(len(refs), len(crops["chunks"])):
                batch = self._chunk(ctx, work, "crops", c)
                out = work.buffer(batch.shape)
                rows, shas = _augment_batch(p, batch, base, out.array)
                base += len(batch)
                ctx.report(base, crops["count"], "crops")
                draws.append(rows)
                digests.append(shas)
                finished = work.submit(f"augmented/{c:06d}", out)
                if finished:
                    refs.extend(finished)
                    n = len(refs)
                    ctx.save_progress({"chunks": refs, "draws": draws[:n], "sha256": digests[:n]})
            refs.extend(work.drain())
        finally:
            work.close()
        ctx["augmented"] = {
            "chunks": refs,
            "draws": np.concatenate(draws) if draws else np.zeros((0, 4)),
            "sha256": np.concatenate(digests) if digests else np.zeros((0, 32), np.uint8),
            "count": base,
        }

    # -- 6 -------------------------------------------------------------------
    @step(overlap=False)  # writes outside ctx: only while this attempt still owns the run
    def write_dataset(self, ctx: StepContext) -> None:
        """Write `shard_size`-crop `.npz` shards, then `manifest.jsonl` last; then drop the work chunks.

        A shard's bytes depend only on the crops, so a resumed run that writes a
        shard again writes identical bytes; the manifest appears only once every
        shard it lists is there, so a reader that sees it sees a whole dataset.
        """
        p: DataPrepParams = ctx.params
        out = open_store(p.output_uri)
        work = self._work(ctx)
        augmented = ctx["augmented"]
        total = augmented["count"]
        n_shards = -(-total // p.shard_size)
        manifest = "".join(shards.manifest_line(e) for e in self._manifest_entries(ctx)).encode()
        if out.exists(shards.MANIFEST):
            if out.get(shards.MANIFEST) == manifest:
                # An earlier attempt finished writing but stopped before its commit.
                self._finish(ctx, out, work, n_shards, manifest)
                return
            out.delete(shards.MANIFEST)  # a different dataset was here: never pair it with our shards
        state = ctx.progress or {"next_shard": 0}
        # Shards the saved progress counts are skipped, unless one has gone missing since.
        start = next(
            (i for i in range(state["next_shard"]) if not out.exists(shards.shard_name(i))), state["next_shard"]
        )
        if start:
            log.warning("write_dataset: resuming at shard %d of %d", start, n_shards)
        load = functools.partial(self._chunk, ctx, work, "augmented")
        for number, images in _shard_batches(load, augmented["chunks"], p.shard_size, start):
            lo = number * p.shard_size
            data = shards.encode_shard(images, np.arange(lo, lo + len(images), dtype=np.int64))
            out.put(shards.shard_name(number), data)
            ctx.report(number + 1, n_shards, "shards")
            ctx.save_progress({"next_shard": number + 1})
        out.put(shards.MANIFEST, manifest)
        self._finish(ctx, out, work, n_shards, manifest)

    def _finish(self, ctx: StepContext, out: Any, work: WorkStore, n_shards: int, manifest: bytes) -> None:
        keep = {shards.shard_name(i) for i in range(n_shards)}
        stale = [path for path in out.list("shard-") if "/" not in path and path not in keep]
        for path in stale:
            out.delete(path)
        if isinstance(out, Tidy):  # what a killed attempt's interrupted writes left in the folder
            out.tidy("", recursive=False)
        removed = work.clear()
        # What the cleanup removed depends on what earlier runs and attempts left, so it is
        # logged, not kept in ctx: a resumed run's context equals an uninterrupted run's.
        ctx["dataset"] = {
            "uri": ctx.params.output_uri,
            "shards": n_shards,
            "crops": ctx["augmented"]["count"],
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        }
        if stale:  # someone's earlier dataset was in this folder: say so where it is seen
            log.warning("write_dataset: removed %d shards an earlier run left in %s", len(stale), ctx.params.output_uri)
        log.info(
            "write_dataset: %d crops in %d shards at %s; %d work objects removed",
            ctx["augmented"]["count"],
            n_shards,
            ctx.params.output_uri,
            removed,
        )

    def _manifest_entries(self, ctx: StepContext) -> Iterator[dict[str, Any]]:
        p: DataPrepParams = ctx.params
        video, frames, found, augmented = ctx["video"], ctx["frames"], ctx["regions"], ctx["augmented"]
        fps = float(video["fps"])
        for i in range(augmented["count"]):
            frame = int(frames["index"][found["frame_pos"][i]])
            d = aug.Draw.from_row(augmented["draws"][i])
            yield {
                "crop": i,
                "shard": shards.shard_name(i // p.shard_size),
                "offset": i % p.shard_size,
                "frame": frame,
                "time_s": round(frame / fps, 6) if fps > 0 else None,
                "box": [int(v) for v in found["boxes"][i]],
                "size": p.crop_size,
                "augmentation": d.describe(p.augmentations),
                "sha256": bytes(augmented["sha256"][i]).hex(),
            }

    # -- helpers ---------------------------------------------------------------
    def _chunk(self, ctx: StepContext, work: WorkStore, kind: str, c: int) -> np.ndarray:
        """Chunk `c` of `ctx[kind]` ("crops" or "augmented"). One that is gone or damaged is made
        again (crops cut from their frames decoded again; augmented from crop chunk `c`) and
        must come out with the recorded checksum before it is used and written back."""
        refs = ctx[kind]["chunks"]
        try:
            return work.get(refs[c])
        except CorruptChunk as e:
            log.warning("%s: making it again from the video", e)
        lo = sum(r["count"] for r in refs[:c])
        if kind == "crops":
            array = self._cut_crops(ctx, lo, lo + refs[c]["count"])
        else:
            crops = self._chunk(ctx, work, "crops", c)
            array = np.empty_like(crops)
            _augment_batch(ctx.params, crops, lo, array)
        try:
            work.restore(refs[c], array)
        except CorruptChunk as e:
            raise InvalidInput(f"work_uri: {e}; rerun from the {_cutting_step(ctx.params)} step") from None
        return array

    def _cut_crops(self, ctx: StepContext, lo: int, hi: int) -> np.ndarray:
        """Crops lo..hi-1, cut from frames decoded again (each checked against its fingerprint)."""
        p: DataPrepParams = ctx.params
        frames, found = ctx["frames"], ctx["regions"]
        owner, boxes = found["frame_pos"][lo:hi], found["boxes"][lo:hi]
        positions = np.unique(owner)
        out = np.empty((hi - lo, p.crop_size, p.crop_size, 3), np.uint8)
        i = 0
        decoded = iter_frames(self._local_video(ctx), frames["index"][positions], frames["fingerprint"][positions])
        for k, (_, frame) in enumerate(decoded):
            while i < len(owner) and owner[i] == positions[k]:
                out[i] = regions.cut(frame, boxes[i], p.crop_size)
                i += 1
        return out

    def _local_video(self, ctx: StepContext) -> str:
        """The video on local disk; re-fetched and checked against open_video's sha256 in a new pod."""
        cache = self._video_cache
        if cache is not None and cache[0] == ctx["video"]["sha256"]:
            return cache[1]
        try:
            path, digest = fetch_video(ctx.params.video_uri, ctx.scratch_dir, expect_sha256=ctx["video"]["sha256"])
        except VideoError as e:
            raise InvalidInput(f"video_uri: {e}") from None
        self._video_cache = (digest, path)
        return path

    def _work(self, ctx: StepContext) -> WorkStore:
        p: DataPrepParams = ctx.params
        uri = p.work_uri or p.output_uri
        return WorkStore(uri, f"_work/{ctx.tenant}/{ctx.run_id}")


def _cutting_step(p: DataPrepParams) -> str:
    """The first step that makes the work chunks: extract_frames cuts center and grid crops, crop cuts faces."""
    return "crop" if p.mode == "faces" else "extract_frames"


def _augment_batch(p: DataPrepParams, batch: np.ndarray, base: int, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augment crops base.. into `out`; their draws (n, 4) and the sha256 of each result (n, 32)."""
    rows, shas = [], []
    for i, crop in enumerate(batch):
        d = aug.draw(p.seed, base + i)
        out[i] = aug.apply(crop, d, p.augmentations)
        rows.append(d.as_row())
        shas.append(hashlib.sha256(out[i].data).digest())
    return (
        np.asarray(rows, dtype=np.float64).reshape(-1, 4),
        np.frombuffer(b"".join(shas), dtype=np.uint8).reshape(-1, 32),
    )


def _shard_batches(
    load: Callable[[int], np.ndarray], refs: list[dict[str, Any]], shard_size: int, start_shard: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (shard number, images) from `start_shard` on, holding one work chunk and one shard at a time."""
    total = sum(r["count"] for r in refs)
    starts = np.cumsum([0] + [r["count"] for r in refs])
    loaded: tuple[int, np.ndarray] | None = None
    for number in range(start_shard, -(-total // shard_size)):
        lo, hi = number * shard_size, min(total, (number + 1) * shard_size)
        images: np.ndarray | None = None
        at = lo
        while at < hi:
            c = int(np.searchsorted(starts, at, side="right")) - 1
            if loaded is None or loaded[0] != c:
                loaded = (c, load(c))
            chunk = loaded[1]
            if images is None:
                images = np.empty((hi - lo, *chunk.shape[1:]), chunk.dtype)
            take = min(hi, int(starts[c + 1])) - at
            images[at - lo : at - lo + take] = chunk[at - int(starts[c]) : at - int(starts[c]) + take]
            at += take
        assert images is not None
        yield number, images

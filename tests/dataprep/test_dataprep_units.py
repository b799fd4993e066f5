"""Pure parts of the dataprep pipeline: decoding, regions, augmentation, shards, params."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydantic
import pytest

from pipeline_runtime.pipelines import augment as aug
from pipeline_runtime.pipelines import regions, shards
from pipeline_runtime.pipelines.dataprep import DataPrepParams
from pipeline_runtime.pipelines.kept_frames import KeptFrames
from pipeline_runtime.pipelines.video_io import (
    FrameReader,
    VideoError,
    fetch_video,
    fingerprint,
    iter_frames,
    probe,
    split_uri,
)
from pipeline_runtime.pipelines.work_store import CorruptChunk, NpyBuffer, WorkStore, npy_bytes
from tests.dataprep.synth import draw_face
from tests.runtime.pipelines_for_tests import StoreWrapper


def decode_all(path: str) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


# -- video_io -------------------------------------------------------------------------------


@pytest.mark.parametrize("fourcc", ["mp4v", "MJPG", "XVID"])
def test_probe_reads_metadata(video: Callable[..., str], fourcc: str) -> None:
    info = probe(video(frames=60, fourcc=fourcc))
    assert (info.width, info.height, info.fps) == (160, 120, 25.0)
    assert info.frame_count == 60


def test_probe_refuses_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video\n" * 100)
    with pytest.raises(VideoError, match="not a readable video"):
        probe(str(junk))


@pytest.mark.parametrize("fourcc", ["mp4v", "MJPG", "XVID"])
def test_verified_seek_lands_on_the_same_frame_as_decoding_from_the_start(
    video: Callable[..., str], fourcc: str
) -> None:
    path = video(frames=150, fourcc=fourcc)
    reference = decode_all(path)
    for index in (1, 13, 64, 99, 149):
        with FrameReader(path) as reader:
            reader.seek(index, anchor=(index, fingerprint(reference[index])))
            frame = reader.read()
        assert frame is not None and np.array_equal(frame, reference[index]), (fourcc, index)
    # Anchored before the target: seek to the anchor, then decode forward.
    with FrameReader(path) as reader:
        reader.seek(90, anchor=(40, fingerprint(reference[40])))
        frame = reader.read()
        assert frame is not None and np.array_equal(frame, reference[90])


def test_seek_with_a_wrong_anchor_falls_back_to_decoding_from_the_start(video: Callable[..., str]) -> None:
    path = video(frames=120)
    reference = decode_all(path)
    with FrameReader(path) as reader:
        reader.seek(70, anchor=(70, fingerprint(reference[3])))
        assert reader.fallbacks == 1
        frame = reader.read()
        assert frame is not None and np.array_equal(frame, reference[70])


def test_iter_frames_yields_the_kept_frames_from_any_start(video: Callable[..., str]) -> None:
    path = video(frames=120)
    reference = decode_all(path)
    indices = np.arange(0, 120, 7)
    fps = np.stack([np.frombuffer(fingerprint(reference[i]), np.uint8) for i in indices])
    got = list(iter_frames(path, indices, fps, start=5))
    assert [pos for pos, _ in got] == list(range(5, len(indices)))
    for pos, frame in got:
        assert np.array_equal(frame, reference[indices[pos]])


def test_iter_frames_refuses_a_frame_that_decodes_differently(video: Callable[..., str]) -> None:
    path = video(frames=60)
    indices = np.arange(3)
    wrong = np.zeros((3, 16), np.uint8)
    with pytest.raises(VideoError, match="decodes differently"):
        list(iter_frames(path, indices, wrong))


def test_split_uri() -> None:
    assert split_uri("gs://bucket/dir/v.mp4") == ("gs://bucket/dir", "v.mp4")
    assert split_uri("gs://bucket/v.mp4") == ("gs://bucket", "v.mp4")
    assert split_uri("file:///data/v.mp4") == (None, "/data/v.mp4")
    assert split_uri("/data/v.mp4") == (None, "/data/v.mp4")
    with pytest.raises(VideoError):
        split_uri("gs://bucket/")


def test_fetch_video_checks_the_recorded_checksum(video: Callable[..., str], tmp_path: Path) -> None:
    path = video(frames=60)
    local, digest = fetch_video(f"file://{path}", tmp_path)
    assert local == path and digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with pytest.raises(VideoError, match="changed since open_video"):
        fetch_video(path, tmp_path, expect_sha256="0" * 64)
    with pytest.raises(VideoError, match="no such file"):
        fetch_video(str(tmp_path / "missing.mp4"), tmp_path)


# -- regions --------------------------------------------------------------------------------


def test_center_box_is_centred_and_shrinks_to_fit() -> None:
    assert regions.center_box(640, 480, 224) == (208, 128, 224, 224)
    assert regions.center_box(160, 120, 224) == (20, 0, 120, 120)


def test_grid_boxes_tile_without_overlap() -> None:
    boxes = regions.grid_boxes(640, 480, 224)
    assert len(boxes) == 4
    assert all(w == h == 224 and 0 <= x <= 640 - 224 and 0 <= y <= 480 - 224 for x, y, w, h in boxes)
    mask = np.zeros((480, 640), int)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] += 1
    assert mask.max() == 1
    assert regions.grid_boxes(100, 100, 224) == [regions.center_box(100, 100, 224)]


def test_cut_gives_square_crops_of_the_requested_size() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    exact = regions.cut(frame, (10, 20, 64, 64), 64)
    assert exact.shape == (64, 64, 3) and np.array_equal(exact, frame[20:84, 10:74])
    assert regions.cut(frame, (0, 0, 120, 120), 64).shape == (64, 64, 3)
    assert regions.cut(frame, (0, 0, 32, 32), 64).shape == (64, 64, 3)


@pytest.mark.skipif(regions.faces_unavailable() is not None, reason=str(regions.faces_unavailable()))
def test_face_detector_finds_a_face_and_nothing_in_a_blank_frame() -> None:
    img = np.full((240, 320, 3), 90, np.uint8)
    draw_face(img, 160, 120, 60)
    detector = regions.FaceDetector()
    boxes = detector.detect(img)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert w == h and x <= 160 <= x + w and y <= 120 <= y + h
    assert detector.detect(np.full((240, 320, 3), 90, np.uint8)) == []


@pytest.mark.skipif(regions.faces_unavailable() is None, reason="this OpenCV ships the Haar cascades")
def test_faces_mode_is_refused_up_front_when_opencv_lacks_the_cascades() -> None:
    with pytest.raises(pydantic.ValidationError, match="mode") as err:
        DataPrepParams(video_uri="v.mp4", output_uri="out", mode="faces")
    assert "Haar" in str(err.value)


# -- augmentation ---------------------------------------------------------------------------


def test_draws_depend_only_on_seed_and_crop_index() -> None:
    forward = [aug.draw(7, i) for i in range(50)]
    backward = [aug.draw(7, i) for i in reversed(range(50))][::-1]
    assert forward == backward
    assert aug.draw(7, 3) != aug.draw(8, 3)
    assert len({d.as_row()[1] for d in forward}) == 4  # all quarter turns occur


def test_apply_is_deterministic_and_keeps_shape_and_dtype() -> None:
    crop = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    d = aug.draw(0, 11)
    a = aug.apply(crop, d, list(aug.ALL))
    b = aug.apply(crop.copy(), d, list(aug.ALL))
    assert a.dtype == np.uint8 and a.shape == crop.shape and a.flags.c_contiguous
    assert np.array_equal(a, b)
    assert np.array_equal(aug.apply(crop, d, []), crop)


def test_each_augmentation_does_what_it_says() -> None:
    crop = np.random.default_rng(2).integers(40, 200, (16, 16, 3), dtype=np.uint8)
    flip = aug.Draw(True, 0, 0.0, 1.0)
    assert np.array_equal(aug.apply(crop, flip, ["flip"]), crop[:, ::-1])
    turn = aug.Draw(False, 1, 0.0, 1.0)
    assert np.array_equal(aug.apply(crop, turn, ["rotate"]), np.rot90(crop))
    brighter = aug.Draw(False, 0, 10.0, 1.0)
    assert np.array_equal(aug.apply(crop, brighter, ["brightness"]), crop + 10)
    flat = aug.Draw(False, 0, 0.0, 0.0)
    assert (aug.apply(crop, flat, ["contrast"]) == 128).all()
    assert aug.Draw(True, 3, 1.5, 0.9).describe(["flip", "rotate"]) == {"flip": True, "rotate": 270}


# -- shards and work store ------------------------------------------------------------------


def test_shards_are_byte_identical_whenever_they_are_written() -> None:
    images = np.random.default_rng(3).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    index = np.arange(10, 15, dtype=np.int64)
    first = shards.encode_shard(images, index)
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert shards.encode_shard(images.copy(), index.copy()) == first
    loaded = np.load(io.BytesIO(first))
    assert np.array_equal(loaded["images"], images) and np.array_equal(loaded["crop_index"], index)


def test_manifest_lines_are_stable_json() -> None:
    line = shards.manifest_line({"b": 1, "a": [1, 2]})
    assert line == '{"a":[1,2],"b":1}\n'
    assert shards.read_manifest(line.encode() * 2) == [{"a": [1, 2], "b": 1}] * 2


def test_work_store_round_trips_and_catches_corruption(tmp_path: Path) -> None:
    work = WorkStore(f"file://{tmp_path}", "_work/t/r1")
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    ref = work.put("crops/000000", arr)
    assert ref["count"] == 2 and ref["path"] == f"_work/t/r1/crops/000000-{ref['xxh3_128'][:16]}.npy"
    assert np.array_equal(work.get(ref), arr)
    assert work.put("crops/000000", arr) == ref  # same name, same bytes: idempotent
    # A stale attempt that cut chunk 0 differently writes beside it, never over it.
    other = work.put("crops/000000", arr[::-1])
    assert other["path"] != ref["path"] and np.array_equal(work.get(ref), arr)
    (tmp_path / ref["path"]).write_bytes(b"garbage")
    with pytest.raises(CorruptChunk):
        work.get(ref)
    # What a SIGKILL inside a write leaves: the store's temporary file beside the chunks.
    (tmp_path / "_work" / "t" / "r1" / "crops" / ".tmp-k1ll3d").write_bytes(b"half a chunk")
    assert work.clear() == 2 and work.store.list("_work/") == []
    assert not (tmp_path / "_work").exists()  # no empty folders, no temporary files left in a local store


def test_work_store_writes_in_the_background_in_order(tmp_path: Path) -> None:
    work = WorkStore(f"file://{tmp_path}", "w", in_flight=2)
    refs = []
    for i in range(5):
        chunk = NpyBuffer((3, 2))
        chunk.array[:] = i
        refs += work.submit(f"c{i}", chunk)
        assert len(refs) >= i  # at most one write is still outstanding
    refs += work.drain()
    work.close()
    assert [r["path"].split("-")[0] for r in refs] == [f"w/c{i}" for i in range(5)]
    for i, ref in enumerate(refs):
        assert np.array_equal(work.get(ref), np.full((3, 2), i, np.uint8))
        assert (tmp_path / ref["path"]).read_bytes() == npy_bytes(np.full((3, 2), i, np.uint8))


# -- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("frame_stride", 0),
        ("frame_stride", -2),
        ("crop_size", 0),
        ("mode", "everything"),
        ("max_frames", 0),
        ("augmentations", ["blur"]),
        ("augmentations", ["flip", "flip"]),
        ("shard_size", 0),
        ("output_uri", "s3://bucket/x"),
        ("video_uri", ""),
        ("seed", -1),
    ],
)
def test_bad_params_name_the_field(field: str, value: object) -> None:
    raw = {"video_uri": "v.mp4", "output_uri": "out", field: value}
    with pytest.raises(pydantic.ValidationError) as err:
        DataPrepParams.model_validate(raw)
    assert err.value.errors()[0]["loc"][0] == field


def test_defaults() -> None:
    p = DataPrepParams(video_uri="gs://b/v.mp4", output_uri="gs://b/out")
    assert (p.frame_stride, p.crop_size, p.mode, p.max_frames, p.seed) == (1, 224, "center", None, 0)
    assert p.augmentations == ["flip", "rotate", "brightness", "contrast"]


class GatedStore(StoreWrapper):
    """Holds every put until `gate` is set: a slow disk, so writes are still pending."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = threading.Event()

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        assert self.gate.wait(30), "the test never opened the gate"
        super().put(path, data, if_absent=if_absent)


def test_kept_frames_lists_only_frames_whose_crops_are_stored(tmp_path: Path) -> None:
    frames = [np.full((40, 50, 3), i, np.uint8) for i in range(5)]
    boxes = regions.grid_boxes(50, 40, 16)  # 3x2 tiles
    work = WorkStore(f"file://{tmp_path}", "w", in_flight=3)  # room for both chunks below to wait
    gated = GatedStore(work.store)
    work.store = gated
    kept = KeptFrames(
        {"next_frame": 0, "index": [], "fingerprint": [], "windows": []},
        chunk_size=12,
        crop_size=16,
        boxes=boxes,
        work=work,
    )
    assert kept.per_chunk == 2  # 12 crops = 2 frames of 6 tiles
    try:
        for i in range(4):
            kept.add(i, frames[i])
            if kept.full:
                assert not kept.flush(i + 1, wait=False)  # queued, not stored: nothing to list yet
        assert kept.count == 4 and kept.state([])["next_frame"] == 0 and kept.anchor is None
        gated.gate.set()
        kept.add(4, frames[4])  # a partial chunk, as a heartbeat or the video's end leaves one
        assert kept.flush(5, wait=True)
    finally:
        gated.gate.set()
        kept.close()
        work.close()
    state = kept.state([])
    assert state["next_frame"] == 5 and kept.anchor == (4, fingerprint(frames[4]))
    assert [c.tolist() for c in state["index"]] == [[0, 1], [2, 3], [4]]
    assert [ref["count"] for ref in state["windows"]] == [12, 12, 6]
    crops = np.concatenate([work.get(ref) for ref in state["windows"]])
    expected = [regions.cut(frames[f], box, 16) for f in range(5) for box in boxes]
    assert np.array_equal(crops, np.stack(expected))


def test_kept_frames_without_boxes_lists_at_once() -> None:
    kept = KeptFrames({"next_frame": 0, "index": [], "fingerprint": [], "windows": []}, chunk_size=2, crop_size=8)
    frames = [np.full((10, 10, 3), i, np.uint8) for i in range(3)]
    try:
        for i, frame in enumerate(frames[:2]):
            kept.add(i * 3, frame)
        assert kept.full and kept.flush(5, wait=False)
        assert kept.state([])["next_frame"] == 5
        kept.add(6, frames[2])
        assert not kept.full and kept.flush(9, wait=False)
    finally:
        kept.close()
    state = kept.state([7])
    assert state["next_frame"] == 9 and state["windows"] == [] and state["resumed_at"] == [7]
    assert [c.tolist() for c in state["index"]] == [[0, 3], [6]]
    assert [bytes(f) for f in np.concatenate(state["fingerprint"])] == [fingerprint(f) for f in frames]


def test_work_store_restores_a_chunk_only_with_its_recorded_bytes(tmp_path: Path) -> None:
    work = WorkStore(f"file://{tmp_path}", "w")
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    ref = work.put("crops/000000", arr)
    (tmp_path / ref["path"]).unlink()
    with pytest.raises(CorruptChunk, match="making it again gave different bytes"):
        work.restore(ref, arr + 1)
    assert not (tmp_path / ref["path"]).exists()
    work.restore(ref, arr.copy())
    assert np.array_equal(work.get(ref), arr)

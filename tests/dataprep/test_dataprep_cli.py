"""The dataprep pipeline through the real `pipeline-runtime` CLI: datasets, bad input, kills, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.pipelines import regions, shards
from tests.dataprep.synth import make_face_video
from tests.runtime.conftest import Runtime, RuntimeProcess, termination

SLOW = "tests.dataprep.slow_dataprep:SlowDataPrep"
KILL_PARAMS = {"crop_size": 64, "shard_size": 8, "chunk_size": 16, "seed": 5}


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime(tmp_path, env={"RESPAWN_PROGRESS_INTERVAL_SECONDS": "0"})


def run_args(pipeline: str, params: dict[str, Any], ckpt: Path, run_id: str = "r1", attempt: int = 1) -> list[str]:
    return [
        "run",
        pipeline,
        "--params",
        json.dumps(params),
        "--run-id",
        run_id,
        "--checkpoint-uri",
        f"file://{ckpt}",
        "--attempt",
        str(attempt),
        "--resume",
        "--retain",
        "Always",
    ]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def commits(ckpt: Path, run_id: str = "r1") -> list[dict[str, Any]]:
    """Commit objects of a run, oldest first (docs/checkpoints.md layout; each is written atomically)."""
    folder = ckpt / "default" / run_id / "commits"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def progress_of(ckpt: Path, step: str) -> list[dict[str, Any]]:
    """The plain-JSON fields of every progress state `step` committed, oldest first."""
    states = [
        c["progress"]["state"]
        for c in commits(ckpt)
        if c.get("kind") == "progress" and c["progress"] and c["progress"]["step"] == step
    ]
    return [s["json"] if "json" in s else {k: v["json"] for k, v in s["dict"].items() if "json" in v} for s in states]


def check_dataset(out: Path, crops: int, crop_size: int, shard_size: int) -> list[dict[str, Any]]:
    """The dataset is whole and self-consistent: every manifest line matches its shard's pixels."""
    manifest = shards.read_manifest((out / shards.MANIFEST).read_bytes())
    assert [e["crop"] for e in manifest] == list(range(crops))
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != shards.MANIFEST)
    assert names == [shards.shard_name(i) for i in range(-(-crops // shard_size))]
    assert not (out / "_work").exists()
    loaded = {n: np.load(io.BytesIO((out / n).read_bytes())) for n in names}
    for e in manifest:
        shard = loaded[e["shard"]]
        image = shard["images"][e["offset"]]
        assert image.shape == (crop_size, crop_size, 3) and image.dtype == np.uint8
        assert int(shard["crop_index"][e["offset"]]) == e["crop"]
        assert hashlib.sha256(image.tobytes()).hexdigest() == e["sha256"]
    return manifest


@pytest.fixture(scope="module")
def kill_video(video: Callable[..., str]) -> str:
    return video(frames=200)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, kill_video: str) -> dict[str, bytes]:
    """An uninterrupted run with the kill tests' params: what every resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    code, text, _ = Runtime(tmp).run(
        run_args("dataprep", {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}, tmp / "ck")
    )
    assert code == 0, text
    check_dataset(out, 200, 64, 8)
    return files(out)


# -- datasets -----------------------------------------------------------------------------


@pytest.mark.parametrize("fourcc", ["mp4v", "MJPG", "XVID"])
def test_grid_dataset_has_every_crop_and_a_matching_manifest(
    runtime: Runtime, tmp_path: Path, video: Callable[..., str], fourcc: str
) -> None:
    out = tmp_path / "out"
    params = {
        "video_uri": f"file://{video(frames=90, fourcc=fourcc)}",
        "output_uri": f"file://{out}",
        "mode": "grid",
        "crop_size": 48,
        "frame_stride": 2,
        "max_frames": 40,
        "shard_size": 32,
    }
    code, text, term = runtime.run(run_args("dataprep", params, tmp_path / "ck"))
    assert code == 0, text
    assert term is not None and term["reason"] == "Succeeded"
    # 40 kept frames (0, 2, ..., 78) x a 3x2 grid of 48-pixel tiles in 160x120.
    manifest = check_dataset(out, 240, 48, 32)
    assert sorted({e["frame"] for e in manifest}) == list(range(0, 80, 2))
    assert {tuple(e["box"][2:]) for e in manifest} == {(48, 48)}
    assert all(set(e["augmentation"]) == {"flip", "rotate", "brightness", "contrast"} for e in manifest)
    info = runtime.inspect(f"file://{tmp_path / 'ck'}", "r1")
    assert info["completed_steps"] == [
        "open_video",
        "extract_frames",
        "detect_regions",
        "crop",
        "augment",
        "write_dataset",
    ]
    assert info["context"]["dataset"]["crops"] == 240


def test_two_runs_write_byte_identical_datasets(runtime: Runtime, tmp_path: Path, video: Callable[..., str]) -> None:
    params = {"video_uri": video(frames=60), "crop_size": 56, "augmentations": ["flip", "contrast"], "seed": 3}
    for run in ("a", "b"):
        code, text, _ = runtime.run(
            run_args("dataprep", {**params, "output_uri": str(tmp_path / run)}, tmp_path / "ck", run_id=run)
        )
        assert code == 0, text
    assert files(tmp_path / "a") == files(tmp_path / "b")
    manifest = check_dataset(tmp_path / "a", 60, 56, 256)
    assert all(set(e["augmentation"]) == {"flip", "contrast"} for e in manifest)


def test_a_different_seed_gives_different_crops(runtime: Runtime, tmp_path: Path, video: Callable[..., str]) -> None:
    hashes = []
    for seed in (1, 2):
        out = tmp_path / f"s{seed}"
        code, text, _ = runtime.run(
            run_args(
                "dataprep",
                {"video_uri": video(frames=60), "output_uri": str(out), "crop_size": 32, "seed": seed},
                tmp_path / "ck",
                run_id=f"s{seed}",
            )
        )
        assert code == 0, text
        hashes.append([e["sha256"] for e in check_dataset(out, 60, 32, 256)])
    assert hashes[0] != hashes[1]


@pytest.mark.skipif(regions.faces_unavailable() is not None, reason=str(regions.faces_unavailable()))
def test_faces_mode_crops_the_face_in_almost_every_frame(runtime: Runtime, tmp_path: Path) -> None:
    path = make_face_video(tmp_path / "face.avi", frames=20)
    out = tmp_path / "out"
    params = {"video_uri": path, "output_uri": str(out), "mode": "faces", "crop_size": 64, "chunk_size": 8}
    code, text, _ = runtime.run(run_args("dataprep", params, tmp_path / "ck"))
    assert code == 0, text
    found = len(shards.read_manifest((out / shards.MANIFEST).read_bytes()))
    assert 18 <= found <= 20  # a Haar cascade may miss a frame or two of compressed video
    manifest = check_dataset(out, found, 64, 256)
    for e in manifest:
        x, y, w, h = e["box"]
        face_x = 320 // 2 - 40 + 3 * e["frame"]
        assert w == h and x < face_x < x + w and y < 120 < y + h


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"frame_stride": -1}, "frame_stride"),
        ({"mode": "everything"}, "mode"),
        ({"augmentations": ["blur"]}, "augmentations"),
    ],
)
def test_bad_params_exit_64_naming_the_param(
    runtime: Runtime, tmp_path: Path, video: Callable[..., str], bad: dict[str, Any], field: str
) -> None:
    params = {"video_uri": video(frames=60), "output_uri": str(tmp_path / "out"), **bad}
    code, text, term = runtime.run(run_args("dataprep", params, tmp_path / "ck"))
    assert code == 64, text
    assert term is not None and field in term["message"]


def test_missing_video_exits_64_naming_video_uri(runtime: Runtime, tmp_path: Path) -> None:
    params = {"video_uri": str(tmp_path / "nope.mp4"), "output_uri": str(tmp_path / "out")}
    code, text, term = runtime.run(run_args("dataprep", params, tmp_path / "ck"))
    assert code == 64, text
    assert term is not None and term["message"].startswith("video_uri: no such file")


def test_a_file_that_is_not_a_video_exits_64_naming_video_uri(runtime: Runtime, tmp_path: Path) -> None:
    junk = tmp_path / "holiday.mp4"
    junk.write_bytes(os.urandom(50_000))
    code, text, term = runtime.run(
        run_args("dataprep", {"video_uri": str(junk), "output_uri": str(tmp_path / "o")}, tmp_path / "ck")
    )
    assert code == 64, text
    assert term is not None and term["message"].startswith("video_uri:") and "not a readable video" in term["message"]


# -- stopped and resumed ------------------------------------------------------------------


def start_slow(
    runtime: Runtime, kill_video: str, out: Path, ckpt: Path, frame_s: float = 0.0, shard_s: float = 0.0
) -> RuntimeProcess:
    params = {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}
    return runtime.start(
        run_args(SLOW, params, ckpt), env={"DATAPREP_SLOW_FRAME_S": str(frame_s), "DATAPREP_SLOW_SHARD_S": str(shard_s)}
    )


def resume(runtime: Runtime, kill_video: str, out: Path, ckpt: Path) -> tuple[dict[str, Any], str]:
    """(inspect of the finished run, the resumed attempt's output)."""
    params = {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}
    code, text, term = runtime.run(run_args("dataprep", params, ckpt, attempt=2))
    assert code == 0, text
    info = runtime.inspect(f"file://{ckpt}", "r1")
    assert info["completed_steps"][-1] == "write_dataset"
    return info, text


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGTERM, id="SIGTERM")]
)
def test_stopped_in_extract_frames_resumes_from_its_saved_frame_index(
    runtime: Runtime, tmp_path: Path, kill_video: str, reference: dict[str, bytes], sig: int
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    proc = start_slow(runtime, kill_video, out, ckpt, frame_s=0.01)
    # Two chunks of 16 frames committed: well inside the 200-frame step.
    wait_for(
        lambda: any(s["next_frame"] >= 32 for s in progress_of(ckpt, "extract_frames")),
        60,
        "extract_frames to commit progress",
    )
    proc.send_signal(sig)
    code = proc.wait(30)
    assert code == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert (termination(proc) or {}).get("reason") == "Terminated"
    saved = progress_of(ckpt, "extract_frames")[-1]["next_frame"]
    assert 32 <= saved < 200
    info, text = resume(runtime, kill_video, out, ckpt)
    assert f"resuming at frame {saved} " in text
    # The chunks listed at the stop were kept, the rest cut by the resumed attempt.
    assert info["context"]["crops"]["cut_in"] == "extract_frames"
    assert sum(c["count"] for c in info["context"]["crops"]["chunks"]) == 200
    assert files(out) == reference


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGTERM, id="SIGTERM")]
)
def test_stopped_in_write_dataset_leaves_no_duplicate_or_partial_shards(
    runtime: Runtime, tmp_path: Path, kill_video: str, reference: dict[str, bytes], sig: int
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    proc = start_slow(runtime, kill_video, out, ckpt, shard_s=0.05)
    wait_for(lambda: len(list(out.glob("shard-*.npz"))) >= 4, 60, "four shards to be written")
    proc.send_signal(sig)
    code = proc.wait(30)
    assert code == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not (out / shards.MANIFEST).exists()
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npz")}
    assert 4 <= len(written) < 25
    saved = progress_of(ckpt, "write_dataset")
    info, _ = resume(runtime, kill_video, out, ckpt)
    assert files(out) == reference
    if sig == signal.SIGTERM:
        # The stop committed progress: the resumed attempt skipped the shards already there.
        skipped = saved[-1]["next_shard"]
        assert skipped >= 4
        for number in range(skipped):
            name = shards.shard_name(number)
            assert (out / name).stat().st_mtime_ns == written[name]
    assert info["context"]["dataset"]["shards"] == 25


@pytest.mark.slow
def test_sigterm_between_progress_chunks_is_honoured_within_seconds(
    runtime: Runtime, tmp_path: Path, kill_video: str
) -> None:
    # One progress chunk would span the whole video (chunk_size 4096): only the
    # step's once-a-second heartbeat gives it a point at which to stop.
    params = {"video_uri": kill_video, **KILL_PARAMS, "frame_stride": 7, "chunk_size": 4096}
    ref, out, ckpt = tmp_path / "ref", tmp_path / "out", tmp_path / "ck"
    assert runtime.run(run_args("dataprep", {**params, "output_uri": str(ref)}, tmp_path / "ck-ref"))[0] == 0
    proc = runtime.start(
        run_args(SLOW, {**params, "output_uri": str(out)}, ckpt), env={"DATAPREP_SLOW_FRAME_S": "0.1"}
    )  # ~20 s of extract_frames
    wait_for(lambda: progress_of(ckpt, "extract_frames"), 60, "a heartbeat progress commit")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert time.monotonic() - signalled < 5.0  # the step had ~18 s left
    saved = progress_of(ckpt, "extract_frames")[-1]["next_frame"]
    assert 0 < saved < 200
    code, text, _ = runtime.run(run_args("dataprep", {**params, "output_uri": str(out)}, ckpt, attempt=2))
    assert code == 0, text
    assert f"resuming at frame {saved} " in text
    assert files(out) == files(ref)


@pytest.mark.slow
@pytest.mark.skipif(regions.faces_unavailable() is not None, reason=str(regions.faces_unavailable()))
def test_killed_in_crop_resumes_with_the_chunks_already_stored(runtime: Runtime, tmp_path: Path) -> None:
    # faces mode: boxes come from detect_regions, so crop decodes the video itself
    # (center and grid crops are cut in extract_frames; see the test after this one).
    path = make_face_video(tmp_path / "face.avi", frames=60)
    params = {"video_uri": path, "mode": "faces", "crop_size": 64, "chunk_size": 8, "shard_size": 16, "seed": 5}
    ref, out, ckpt = tmp_path / "ref", tmp_path / "out", tmp_path / "ck"
    assert runtime.run(run_args("dataprep", {**params, "output_uri": str(ref)}, tmp_path / "ck-ref"))[0] == 0
    # ~3 s in crop at 0.05 s a frame: the kill after two chunks lands well inside it.
    proc = runtime.start(
        run_args(SLOW, {**params, "output_uri": str(out)}, ckpt), env={"DATAPREP_SLOW_FRAME_S": "0.05"}
    )
    wait_for(lambda: len(progress_of(ckpt, "crop")) >= 2, 60, "crop to commit two chunks")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert "crop" not in runtime.inspect(f"file://{ckpt}", "r1")["completed_steps"]
    stored = len(progress_of(ckpt, "crop")[-1]["chunks"])
    code, text, _ = runtime.run(run_args("dataprep", {**params, "output_uri": str(out)}, ckpt, attempt=2))
    assert code == 0, text
    crops = runtime.inspect(f"file://{ckpt}", "r1")["context"]["crops"]
    assert crops["cut_in"] == "crop" and f"resuming after chunk {stored} " in text
    assert files(out) == files(ref)


def test_center_crops_are_cut_while_extract_frames_decodes(
    runtime: Runtime, tmp_path: Path, kill_video: str, reference: dict[str, bytes]
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    assert (
        runtime.run(run_args("dataprep", {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}, ckpt))[0]
        == 0
    )
    context = runtime.inspect(f"file://{ckpt}", "r1")["context"]
    # crop took over extract_frames' chunks (16 frames x 1 centre crop each) without decoding.
    assert context["crops"]["cut_in"] == "extract_frames"
    assert context["crops"]["chunks"] == context["frames"]["windows"]
    assert [c["count"] for c in context["crops"]["chunks"]] == [16] * 12 + [8]
    assert files(out) == reference


def test_damaged_and_lost_work_chunks_are_made_again_from_the_video(
    runtime: Runtime, tmp_path: Path, kill_video: str, reference: dict[str, bytes]
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    proc = start_slow(runtime, kill_video, out, ckpt, shard_s=0.05)
    wait_for(lambda: len(list(out.glob("shard-*.npz"))) >= 2, 60, "write_dataset to write two shards")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # Bit rot in the augmented chunk write_dataset needs last; the chunk extract_frames
    # cut for it gone (a lost disk), so the repair must cut its crops again too.
    damaged = sorted((out / "_work").rglob("augmented/*.npy"))[-1]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    sorted((out / "_work").rglob("windows/*.npy"))[-1].unlink()
    params = {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}
    code, text, _ = runtime.run(run_args("dataprep", params, ckpt, attempt=2))
    assert code == 0, text
    assert f"{damaged.name} does not match its checksum: making it again from the video" in text
    assert "is gone: making it again from the video" in text
    assert files(out) == reference


def test_rewriting_an_output_folder_leaves_no_stale_shards(
    runtime: Runtime, tmp_path: Path, kill_video: str, reference: dict[str, bytes]
) -> None:
    out = tmp_path / "out"
    first = {"video_uri": kill_video, "output_uri": str(out), **KILL_PARAMS}
    assert runtime.run(run_args("dataprep", first, tmp_path / "ck", run_id="first"))[0] == 0
    assert files(out) == reference  # 25 shards of 8
    second = {**first, "shard_size": 64, "max_frames": 150}
    code, text, _ = runtime.run(run_args("dataprep", second, tmp_path / "ck", run_id="second"))
    assert code == 0, text
    check_dataset(out, 150, 64, 64)  # exactly 3 shards and the new manifest, nothing else
    assert "removed 22 shards an earlier run left" in text


def test_source_video_replaced_during_the_run_is_refused(
    runtime: Runtime, tmp_path: Path, video: Callable[..., str]
) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(Path(video(frames=200)).read_bytes())
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    proc = start_slow(runtime, str(source), out, ckpt, frame_s=0.01)
    wait_for(lambda: progress_of(ckpt, "extract_frames"), 60, "extract_frames to commit progress")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    source.write_bytes(Path(video(frames=60)).read_bytes())
    params = {"video_uri": str(source), "output_uri": str(out), **KILL_PARAMS}
    code, text, term = runtime.run(run_args("dataprep", params, ckpt, attempt=2))
    assert code == 64, text
    assert (
        term is not None and term["message"].startswith("video_uri:") and "changed since open_video" in term["message"]
    )


def test_rerun_from_augment_after_success_makes_the_deleted_chunks_again(
    runtime: Runtime, tmp_path: Path, video: Callable[..., str]
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ck"
    params = {"video_uri": video(frames=60), "output_uri": str(out), "crop_size": 32}
    assert runtime.run(run_args("dataprep", params, ckpt))[0] == 0
    before = files(out)
    # write_dataset alone finds its own manifest already there: nothing to redo.
    code, text, _ = runtime.run([*run_args("dataprep", params, ckpt, attempt=2), "--rerun-from", "write_dataset"])
    assert code == 0, text
    assert files(out) == before
    # augment needs the crop chunks, which the finished run deleted: it cuts them again.
    code, text, _ = runtime.run([*run_args("dataprep", params, ckpt, attempt=3), "--rerun-from", "augment"])
    assert code == 0, text
    assert "windows/" in text and "is gone: making it again from the video" in text
    assert files(out) == before
    code, text, _ = runtime.run([*run_args("dataprep", params, ckpt, attempt=4), "--rerun-from", "crop"])
    assert code == 0, text
    # extract_frames' crop chunks went with the finished run: crop cut them again from the video.
    assert runtime.inspect(f"file://{ckpt}", "r1")["context"]["crops"]["cut_in"] == "crop"
    assert files(out) == before

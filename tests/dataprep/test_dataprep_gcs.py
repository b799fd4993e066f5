"""dataprep with gs:// input, output and checkpoints against the fake-gcs-server emulator."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.pipelines import shards
from tests.conftest import GCSEmulator
from tests.dataprep.test_dataprep_cli import SLOW, check_dataset, files, run_args
from tests.runtime.conftest import Runtime

PARAMS = {"crop_size": 48, "mode": "grid", "shard_size": 10, "chunk_size": 16, "max_frames": 30, "seed": 9}


def gs_args(pipeline: str, params: dict[str, Any], ckpt: str, attempt: int = 1) -> list[str]:
    return [
        "run",
        pipeline,
        "--params",
        json.dumps(params),
        "--run-id",
        "g1",
        "--checkpoint-uri",
        ckpt,
        "--attempt",
        str(attempt),
        "--resume",
        "--retain",
        "Always",
    ]


def download(emulator: GCSEmulator, bucket: str, prefix: str) -> dict[str, bytes]:
    client = emulator.client()
    return {b.name[len(prefix) + 1 :]: b.download_as_bytes() for b in client.list_blobs(bucket, prefix=prefix + "/")}


@pytest.fixture
def gcs_video(gcs_emulator: GCSEmulator, video: Callable[..., str]) -> str:
    """The test video uploaded to a fresh bucket; returns its gs:// URI."""
    bucket = gcs_emulator.make_bucket(f"in-{id(object()):x}")
    gcs_emulator.client().bucket(bucket).blob("clips/clip.mp4").upload_from_filename(video(frames=90))
    return f"gs://{bucket}/clips/clip.mp4"


@pytest.fixture
def local_reference(tmp_path: Path, video: Callable[..., str]) -> dict[str, bytes]:
    out = tmp_path / "ref"
    code, text, _ = Runtime(tmp_path).run(
        run_args("dataprep", {"video_uri": video(frames=90), "output_uri": str(out), **PARAMS}, tmp_path / "ck")
    )
    assert code == 0, text
    return files(out)


def test_gs_input_and_output_give_the_same_dataset_as_local_files(
    gcs_emulator: GCSEmulator, gcs_video: str, local_reference: dict[str, bytes], tmp_path: Path
) -> None:
    bucket = gcs_emulator.make_bucket("dp-out")
    runtime = Runtime(tmp_path, env={"STORAGE_EMULATOR_HOST": gcs_emulator.url})
    params = {"video_uri": gcs_video, "output_uri": f"gs://{bucket}/datasets/d1", **PARAMS}
    code, text, _ = runtime.run(gs_args("dataprep", params, f"gs://{bucket}/ckpt"))
    assert code == 0, text
    written = download(gcs_emulator, bucket, "datasets/d1")
    assert written == local_reference  # and no `_work/` chunk is left behind
    (tmp_path / "copy").mkdir()
    for name, data in written.items():
        (tmp_path / "copy" / name).write_bytes(data)
    check_dataset(tmp_path / "copy", 180, 48, 10)


def test_sigterm_in_write_dataset_on_gcs_resumes_to_the_same_objects(
    gcs_emulator: GCSEmulator, gcs_video: str, local_reference: dict[str, bytes], tmp_path: Path
) -> None:
    bucket = gcs_emulator.make_bucket("dp-term")
    runtime = Runtime(
        tmp_path, env={"STORAGE_EMULATOR_HOST": gcs_emulator.url, "RESPAWN_PROGRESS_INTERVAL_SECONDS": "0"}
    )
    params = {"video_uri": gcs_video, "output_uri": f"gs://{bucket}/d", **PARAMS}
    proc = runtime.start(gs_args(SLOW, params, f"gs://{bucket}/ckpt"), env={"DATAPREP_SLOW_SHARD_S": "0.2"})
    wait_for(
        lambda: sum(n.startswith("shard-") for n in download(gcs_emulator, bucket, "d")) >= 3, 60, "three shards on GCS"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert shards.MANIFEST not in download(gcs_emulator, bucket, "d")
    code, text, _ = runtime.run(gs_args("dataprep", params, f"gs://{bucket}/ckpt", attempt=2))
    assert code == 0, text
    assert download(gcs_emulator, bucket, "d") == local_reference

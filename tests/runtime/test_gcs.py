"""The gs:// path end to end against fake-gcs-server on loopback."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from respawn_local.testkit import free_port, wait_for

from tests.conftest import GCSEmulator
from tests.runtime.conftest import Runtime, run_argv

CHAIN = "tests.runtime.pipelines_for_tests:Chain"


def args(uri: str, out: Path, attempt: int, retain: str = "Always") -> list[str]:
    return run_argv(CHAIN, {"mb": 2, "work_s": 0.05, "out": str(out)}, uri, attempt, "g1", retain, "tenant1")


@pytest.mark.slow
def test_gcs_kill_between_uploads_and_commit_then_resume(
    runtime: Runtime, tmp_path: Path, gcs_emulator: GCSEmulator
) -> None:
    uri = f"gs://{gcs_emulator.make_bucket('resume')}/ckpt"
    clean_out, out = tmp_path / "clean.txt", tmp_path / "out.txt"
    clean_uri = f"gs://{gcs_emulator.make_bucket('clean')}/ckpt"
    assert runtime.run(args(clean_uri, clean_out, 1))[0] == 0

    marker = tmp_path / "paused"
    proc = runtime.start(
        args(uri, out, 1), env={"RESPAWN_CHAOS_PAUSE_AT": "commit-before:4", "RESPAWN_CHAOS_MARKER": str(marker)}
    )
    wait_for(marker.exists, 60, "the runtime to hold before commit 4")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    code, text, _ = runtime.run(args(uri, out, 2))
    assert code == 0, text
    assert out.read_bytes() == clean_out.read_bytes()
    info = runtime.inspect(uri, "g1", tenant="tenant1")
    assert info["context"] == runtime.inspect(clean_uri, "g1", tenant="tenant1")["context"]
    names = {b.name for b in gcs_emulator.client().list_blobs("resume")}
    assert "ckpt/tenant1/g1/commits/00000001.json" in names
    assert all(n.startswith("ckpt/tenant1/g1/") for n in names)


def test_gcs_success_retires_to_a_tombstone(runtime: Runtime, tmp_path: Path, gcs_emulator: GCSEmulator) -> None:
    bucket = gcs_emulator.make_bucket("retire")
    code, text, _ = runtime.run(args(f"gs://{bucket}/ckpt", tmp_path / "o.txt", 1, "OnFailure"))
    assert code == 0, text
    names = sorted(b.name for b in gcs_emulator.client().list_blobs(bucket))
    assert names and not [n for n in names if "/artifacts/" in n]
    info = runtime.inspect(f"gs://{bucket}/ckpt", "g1", tenant="tenant1")
    assert info["kind"] == "tombstone" and info["outcome"] == "Succeeded"


def test_storage_unreachable_exits_75(runtime: Runtime, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, out, term = runtime.run(
        args("gs://nowhere/ckpt", tmp_path / "o.txt", 1),
        env={"STORAGE_EMULATOR_HOST": dead, "RESPAWN_STORAGE_RETRY_SECONDS": "2"},
    )
    assert code == 75, out
    assert term is not None and term["reason"] == "TransientInfra"


def test_a_missing_bucket_is_invalid_input_naming_the_bucket(
    runtime: Runtime, tmp_path: Path, gcs_emulator: GCSEmulator
) -> None:
    code, out, term = runtime.run(args("gs://no-such-bucket/ckpt", tmp_path / "o.txt", 1))
    assert code == 64 and "Traceback" not in out, out
    assert term is not None and "bucket 'no-such-bucket' does not exist" in term["message"]

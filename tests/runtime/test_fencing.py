"""Two attempts of one run alive at once: the stale one can never commit."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime import Pipeline, step
from pipeline_runtime.checkpoint import Commit, Kind, RunLog, Superseded
from pipeline_runtime.codec import artifact_path, referenced_artifacts
from pipeline_runtime.storage import open_store
from pipeline_runtime.storage.memory import MemoryStore
from tests.conftest import VENV_BIN, GCSEmulator
from tests.runtime.conftest import Runtime, termination
from tests.runtime.pipelines_for_tests import StoreWrapper

CHAIN = "tests.runtime.pipelines_for_tests:Chain"


def split_brain(runtime: Runtime, tmp_path: Path, uri: str, retain: str) -> dict[str, Any]:
    """Attempt 1 hangs inside step c; attempt 2 runs the whole pipeline; attempt 1 wakes."""
    release = tmp_path / "release"
    args = [
        "run",
        CHAIN,
        "--params",
        '{"mb": 1, "work_s": 0.01, "block_attempt": 1}',
        "--run-id",
        "split",
        "--checkpoint-uri",
        uri,
        "--retain",
        retain,
    ]
    env = {"RELEASE_FILE": str(release)}
    old = runtime.start([*args, "--attempt", "1"], env=env)
    wait_for(Path(str(release) + ".waiting").exists, 60, "attempt 1 to hang in step c")
    code, text, _ = runtime.run([*args, "--attempt", "2"], env=env)
    assert code == 0, text
    release.write_text("go")  # the old pod's node comes back
    assert old.wait(60) == 76
    term = termination(old)
    assert term is not None and term["reason"] == "Superseded"
    return term


def test_stale_attempt_cannot_commit_file(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    split_brain(runtime, tmp_path, uri, "Always")
    history = runtime.inspect(uri, "split")["history"]
    claim2 = next(h["seq"] for h in history if h["kind"] == "claim" and h["attempt"] == 2)
    assert all(h["attempt"] == 2 for h in history if h["seq"] >= claim2)
    assert [h["step"] for h in history if h["kind"] == "step" and h["attempt"] == 1] == ["a", "b"]


def test_stale_attempt_after_the_run_finished_exits_76(runtime: Runtime, tmp_path: Path) -> None:
    # Default retain: the winner cleans up and leaves a tombstone; the stale one finds it.
    uri = f"file://{tmp_path}/ck"
    term = split_brain(runtime, tmp_path, uri, "OnFailure")
    assert "finished" in term["message"]
    info = runtime.inspect(uri, "split")
    assert info["kind"] == "tombstone" and info["outcome"] == "Succeeded"
    artifacts = tmp_path / "ck" / "default" / "split" / "artifacts"
    assert not [p for p in artifacts.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_stale_attempt_cannot_commit_gcs(runtime: Runtime, tmp_path: Path, gcs_emulator: GCSEmulator) -> None:
    bucket = gcs_emulator.make_bucket("fencing")
    uri = f"gs://{bucket}/runs"
    split_brain(runtime, tmp_path, uri, "Always")
    history = runtime.inspect(uri, "split")["history"]
    claim2 = next(h["seq"] for h in history if h["kind"] == "claim" and h["attempt"] == 2)
    assert all(h["attempt"] == 2 for h in history if h["seq"] >= claim2)


def body(attempt: int, kind: str = "step") -> Commit:
    return Commit(
        kind=Kind(kind),
        attempt=attempt,
        pipeline_name="p",
        run_guid="r",
        completed_steps=[],
        context={"dict": {}} if kind != "tombstone" else None,
        steps_summary={},
        nonce=f"{attempt}-{kind}",
    )


@pytest.mark.parametrize("uri_kind", ["memory", "file", "gs"])
def test_create_only_commit_is_compare_and_set(uri_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if uri_kind == "gs":
        emu: GCSEmulator = request.getfixturevalue("gcs_emulator")
        uri = f"gs://{emu.make_bucket('cas-' + tmp_path.name[-8:].lower().replace('_', '-'))}/x"
    elif uri_kind == "file":
        uri = f"file://{tmp_path}"
    else:
        uri = f"memory://{tmp_path.name}"
    log = RunLog(open_store(uri), "t", "r")
    log.append(1, body(1))
    log.append(2, body(2, "claim"))
    with pytest.raises(Superseded, match="attempt 2 owns the run"):
        log.append(2, body(1))
    # A retried write whose first try landed is recognised as ours, not as a loss.
    same = body(2)
    log.append(3, same)
    log.append(3, same.model_copy())
    assert log.seqs() == [1, 2, 3]


def test_retired_log_keeps_every_slot_taken() -> None:
    log = RunLog(MemoryStore("memory://retire"), "t", "r")
    for seq in (1, 2, 3):
        log.append(seq, body(1))
    log.put_artifact("artifacts/ab/abcd", b"x")
    tomb = body(1, "tombstone")
    assert log.retire(tomb, 3) == 4
    assert log.artifact_shas() == set()
    for stale_seq in (1, 2, 3, 4):
        with pytest.raises(Superseded, match="already finished"):
            log.append(stale_seq, body(1))


class _GatedDeletes(StoreWrapper):
    """Holds the first delete until the test opens the gate (a retirer paused mid-cleanup)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def delete(self, path: str) -> None:
        if "/artifacts/" in path and not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"
        self.inner.delete(path)


class Three(Pipeline):
    name = "three"

    @step
    def a(self, ctx: Any) -> None:
        ctx["a"] = np.arange(5000)

    @step
    def b(self, ctx: Any) -> None:
        ctx["b"] = ctx["a"] * 2

    @step
    def c(self, ctx: Any) -> None:
        ctx["c"] = int(ctx["b"].sum())


def test_a_stale_cleanup_stops_when_a_newer_commit_lands_after_its_tombstone() -> None:
    inner = MemoryStore("memory://retire-fence")
    gated = _GatedDeletes(inner)
    stale: list[BaseException] = []

    def first_run() -> None:
        try:
            Three(store=gated, run_id="r", retain="OnFailure").run()  # succeeds, then retires: paused
        except BaseException as e:
            stale.append(e)

    worker = threading.Thread(target=first_run)
    worker.start()
    assert gated.waiting.wait(30), "the first run never reached its cleanup"
    # A newer attempt re-runs from b behind the tombstone, keeping what it writes.
    again = Three(store=inner, run_id="r", retain="Always").run(rerun_from="b")
    assert again.executed == ["a", "b", "c"]  # behind a tombstone nothing is resumed
    gated.gate.set()
    worker.join(30)
    assert stale and isinstance(stale[0], Superseded), stale
    log = RunLog(inner, "default", "r")
    newest = log.read(log.seqs()[-1])
    assert isinstance(newest, Commit) and newest.context is not None
    refs = referenced_artifacts(newest.context)
    epoch = newest.artifact_epoch
    assert epoch > 0  # the re-run started over behind the tombstone: a new epoch
    assert refs and all(inner.exists(f"default/r/{artifact_path(sha, epoch)}") for sha in refs)
    final = Three(store=inner, run_id="r", retain="Always", resume_policy="Strict").run()
    assert final.skipped == ["a", "b", "c"]  # the newer run's result is whole


def test_a_retired_run_leaves_no_empty_folders_and_inspect_summarises_it(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    code, text, _ = runtime.run(
        [
            "run",
            "tests.runtime.pipelines_for_tests:Chain",
            "--params",
            '{"mb": 1}',
            "--run-id",
            "tidy",
            "--checkpoint-uri",
            uri,
        ]
    )
    assert code == 0, text
    run = tmp_path / "ck" / "default" / "tidy"
    assert not (run / "artifacts").exists()  # every artifacts/xx/ folder went with its artifacts
    shown = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "inspect", uri, "--run-id", "tidy"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "retired" in out and "stub" not in out and "attempt None" not in out
    assert "older commits, retired" in out
    assert all(f"    {step}" in out for step in ("a", "b", "c", "d", "e"))  # the kept steps summary

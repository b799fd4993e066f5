"""`pipeline-runtime chaos` finds the classic resumability bugs and names the step.

Each buggy pipeline (tests/chaos/buggy.py) is run through the real command, whose cases
are real processes killed by real signals or at storage operations. The first case of
every second seed sweeps the storage moments in turn, so with 8 cases every commit of a
three-step pipeline is interrupted once: the findings below do not depend on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime.testing import assert_resumable
from tests.conftest import VENV_BIN

ROOT = Path(__file__).resolve().parents[2]
KILLS = "8"


def chaos(tmp_path: Path, *args: str, cwd: Path | None = None) -> tuple[int, dict[str, Any] | None, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [
            str(VENV_BIN / "pipeline-runtime"),
            "chaos",
            *args,
            "--json",
            "--workers",
            "2",
            "--workdir",
            str(tmp_path / "work"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tmp_path,
        timeout=300,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    return done.returncode, report, done.stderr


def differences(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for c in report["cases"] for d in c["differences"]]


def test_a_sound_pipeline_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    code, report, err = chaos(
        tmp_path,
        "tests.chaos.buggy:Sound",
        "--params",
        json.dumps({"out": "out"}),
        "--compare-dir",
        "out",
        "--kills",
        KILLS,
        "--seed",
        "1",
    )
    assert code == 0, err
    assert report is not None and report["ok"] and len(report["cases"]) == 8
    interrupted = [a for c in report["cases"] for a in c["attempts"] if a["interruption"] and not a["finished_first"]]
    # Cases 0, 2, 4 and 6 open with a pause at a storage moment, which a first attempt always
    # reaches and which holds it until the kill; a signal at a moment may come after a quick
    # attempt has finished (that attempt then counts as finished first, not as interrupted).
    at_storage = [a for a in interrupted if "before #" in a["interruption"]]
    assert len(at_storage) >= 4, interrupted
    assert {a["interruption"].split("@")[0].split()[0] for a in interrupted} >= {"SIGKILL"}
    assert any(a["resumed_from"] for c in report["cases"] for a in c["attempts"])
    assert any(c["cleanup"] for c in report["cases"])
    assert not (tmp_path / "out").exists(), "a case wrote into the user's own folder"
    assert not list((tmp_path / "work" / "checkpoints").rglob("*.json")), "checkpoints were left behind"


def test_module_global_state_is_found_in_the_step_that_reads_it(tmp_path: Path) -> None:
    code, report, err = chaos(tmp_path, "tests.chaos.buggy:GlobalState", "--kills", KILLS, "--seed", "1")
    assert code == 1 and report is not None, err
    found = [d for d in differences(report) if d["where"] == "context" and d["key"] == "total"]
    assert found and found[0]["step"] == "report"
    assert "outside ctx" in found[0]["hint"] and "int:41 became int:0" in found[0]["what"]
    assert any(c["replay"].endswith(f"--case {c['index']}") for c in report["cases"] if not c["ok"])


def test_state_on_self_is_found_when_a_resumed_step_fails(tmp_path: Path) -> None:
    code, report, err = chaos(tmp_path, "tests.chaos.buggy:SelfState", "--kills", KILLS, "--seed", "1")
    assert code == 1 and report is not None, err
    found = [d for d in differences(report) if d["where"] == "exit"]
    assert found and found[0]["step"] == "apply" and "AttributeError" in found[0]["what"]
    assert "a skipped step kept outside ctx" in found[0]["hint"]


@pytest.mark.parametrize(
    ("pipeline", "step", "key"),
    [("Unseeded", "augment", "noisy"), ("LegacyRandom", "jitter", "offsets"), ("WallClock", "stamp", "made_at")],
)
def test_non_determinism_is_named_not_blamed_on_resume(tmp_path: Path, pipeline: str, step: str, key: str) -> None:
    code, report, err = chaos(tmp_path, f"tests.chaos.buggy:{pipeline}", "--kills", "2", "--seed", "1")
    assert code == 1 and report is not None, err
    assert [(f["step"], f["key"]) for f in report["nondeterministic"]] == [(step, key)]
    assert f"step `{step}` writes `{key}` differently on every run" in report["nondeterministic"][0]["message"]
    assert not differences(report), "the varying value was blamed on resume"


@pytest.mark.slow
def test_fresh_processes_give_the_same_verdicts(tmp_path: Path) -> None:
    code, report, err = chaos(
        tmp_path, "tests.chaos.buggy:GlobalState", "--kills", KILLS, "--seed", "1", "--fresh-processes"
    )
    assert code == 1 and report is not None, err
    assert any(d["key"] == "total" and d["step"] == "report" for d in differences(report))


def test_changing_a_committed_array_in_place_is_named(tmp_path: Path) -> None:
    code, report, err = chaos(tmp_path, "tests.chaos.buggy:InPlace", "--kills", "2")
    assert code == 1 and report is not None, err
    assert "in step `normalize`" in report["reference_error"]
    assert "read-only" in report["reference_error"] and "copy it first" in report["reference_error"]
    assert report["cases"] == []


@pytest.mark.slow
def test_appending_to_an_output_file_is_found_with_the_compare_dir(tmp_path: Path) -> None:
    code, report, err = chaos(
        tmp_path,
        "tests.chaos.buggy:Appends",
        "--params",
        json.dumps({"out": "out"}),
        "--compare-dir",
        "out",
        "--kills",
        KILLS,  # most moments land inside `write`; eight cases make missing all of them negligible
        "--seed",
        "2",
    )
    assert code == 1 and report is not None, err
    found = [d for d in differences(report) if d["where"] == "file"]
    assert found and found[0]["key"] == "rows.csv" and found[0]["step"] == "write"


def test_an_effect_run_twice_is_found(tmp_path: Path) -> None:
    code, report, err = chaos(
        tmp_path,
        "tests.chaos.buggy:Outbox",
        "--params",
        json.dumps({"out": "out"}),
        "--compare-dir",
        "out",
        "--kills",
        KILLS,
        "--seed",
        "1",
    )
    assert code == 1 and report is not None, err
    found = [d for d in differences(report) if d["where"] == "file"]
    assert found and found[0]["key"] == "outbox.txt" and found[0]["step"] == "publish"
    assert "overlap=False" in found[0]["hint"] and "not idempotent" in found[0]["hint"]


@pytest.mark.parametrize(
    "args",
    [
        ["no_such_module:Nope"],
        ["tests.chaos.buggy:Sound", "--params", '{"bogus": 1}'],
        ["tests.chaos.buggy:Sound", "--kills", "0"],
        ["tests.chaos.buggy:Sound", "--signals", "HUP"],
        ["tests.chaos.buggy:Sound", "--params", '{"out": "a-file/out"}', "--compare-dir", "a-file/out"],
        ["tests.chaos.buggy:Sound", "--params", '{"out": "out"}', "--compare-dir", "elsewhere"],
        ["tests.chaos.buggy:Sound", "--case", "10"],
        ["tests.chaos.buggy:Sound", "--storage-counts", "12"],
        ["tests.chaos.buggy:Sound", "--storage-counts", "12,-1"],
    ],
    ids=[
        "unknown-pipeline",
        "bad-params",
        "no-kills",
        "bad-signal",
        "unwritable-compare-dir",
        "compare-dir-no-param-names",
        "case-out-of-range",
        "storage-counts-one-number",
        "storage-counts-negative",
    ],
)
def test_bad_input_gets_exit_64_and_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    code, report, err = chaos(tmp_path, *args)
    assert code == 64 and report is None
    lines = [line for line in err.splitlines() if line.startswith("pipeline-runtime:")]
    assert len(lines) == 1 and "InvalidInput" in lines[0], err
    assert "Traceback" not in err


def test_assert_resumable_raises_with_the_report_and_passes_a_sound_pipeline(tmp_path: Path) -> None:
    from tests.chaos.buggy import GlobalState, Sound

    report = assert_resumable(Sound, {}, kills=3, seed=4, workdir=tmp_path / "sound")
    assert report.ok and len(report.cases) == 3
    with pytest.raises(AssertionError, match=r"context `total` \(written by step `report`\)"):
        assert_resumable(GlobalState, {}, kills=6, seed=1, workers=2, workdir=tmp_path / "global")


def test_the_resumable_fixture_is_registered(resumable: Any) -> None:
    from tests.chaos.buggy import Sound

    assert resumable(Sound, {}, kills=2, seed=5).ok


def test_a_cleanup_killed_after_its_tombstone_is_finished_by_the_next_cleanup(tmp_path: Path) -> None:
    """Regression (found by the chaos tool on every pipeline): the second cleanup said
    "already retired" and left every artifact behind."""
    import signal
    import sys

    from respawn_local.testkit import wait_for

    from pipeline_runtime.checkpoint import RunLog
    from pipeline_runtime.storage import open_store

    uri = f"file://{tmp_path}/ck"
    run = subprocess.run(
        [
            str(VENV_BIN / "pipeline-runtime"),
            "run",
            "tests.chaos.buggy:Sound",
            "--run-id",
            "r",
            "--checkpoint-uri",
            uri,
            "--retain",
            "Always",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    runlog = RunLog(open_store(uri), "default", "r")
    assert runlog.store.list("default/r/artifacts/"), "the run stored no artifact to clean up"
    marker = tmp_path / "paused"
    cut = subprocess.Popen(
        [sys.executable, "-m", "pipeline_runtime.chaos.child", "cleanup", uri, "--run-id", "r"],
        cwd=ROOT,
        env={**os.environ, "RESPAWN_CHAOS_PAUSE_AT": "delete-before:1", "RESPAWN_CHAOS_MARKER": str(marker)},
    )
    wait_for(lambda: marker.exists() or cut.poll() is not None, 60, "the cleanup to reach its first delete")
    cut.send_signal(signal.SIGKILL)
    cut.wait(30)
    latest = runlog.latest()
    assert latest is not None and latest.body is not None and latest.body.kind == "tombstone"
    again = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "cleanup", uri, "--run-id", "r"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert again.returncode == 0 and "leftovers removed" in again.stdout, again.stderr
    assert runlog.store.list("default/r/artifacts/") == []
    assert {h.kind for h in runlog.history()} == {"stub", "tombstone"}


def test_a_replay_draws_the_sessions_storage_moments_whatever_its_clean_run_counted(tmp_path: Path) -> None:
    """Found by the chaos helper: storage moments were drawn over the replaying session's own
    clean run, whose commit and upload counts vary with timing (progress commits), so the
    same seed and --case could interrupt other operations. The replay command now carries
    the session's counts (--storage-counts), and with them the plans are the same."""
    from pipeline_runtime.chaos.engine import ChaosConfig, Session, _Reference

    def plans(counts: dict[str, int], given: tuple[int, int] | None) -> list[list[Any]]:
        cfg = ChaosConfig("tests.chaos.buggy:Sound", kills=12, seed=7, workdir=tmp_path / "w", storage_counts=given)
        session = Session(cfg)
        ref = _Reference(1.0, [], {}, dict(counts), {}, [])
        session.use_storage_counts(ref, ref)  # as Session.run does before it draws the plans
        assert "--storage-counts" in session.replay_command(ref.counts)
        return session.plans(ref)

    session_counts = {"commit": 13, "artifact": 40}
    original = plans(session_counts, None)
    assert plans({"commit": 15, "artifact": 47}, None) != original  # why a replay needs the counts
    assert plans({"commit": 15, "artifact": 47}, (13, 40)) == original


def test_storage_moments_are_drawn_over_the_operations_both_clean_runs_reached(tmp_path: Path) -> None:
    """Found measuring the chaos bench: the first clean run shares the machine with the fork
    server's imports, runs slower and so makes more progress commits. It counted 288 uploads
    where the second counted 136 (and the cases about 140), so half the upload moments drawn
    never came: the attempt finished first, and that interruption tested nothing."""
    from pipeline_runtime.chaos import SIGNALS
    from pipeline_runtime.chaos.engine import ChaosConfig, Session, _Reference

    session = Session(ChaosConfig("tests.chaos.buggy:Sound", kills=60, seed=3, workdir=tmp_path / "w"))
    first = _Reference(1.0, [], {}, {"commit": 15, "artifact": 288, "delete": 0}, {}, [])
    second = _Reference(1.0, [], {}, {"commit": 12, "artifact": 136, "delete": 0}, {}, [])
    session.use_storage_counts(first, second)
    moments = [i for plan in session.plans(first) for i in plan if i.kind not in SIGNALS]
    uploads = [i.n for i in moments if i.kind == "artifact-before"]
    commits = [i.n for i in moments if i.kind == "commit-before"]
    assert uploads and commits
    assert max(uploads) <= 136 and max(commits) <= 12
    assert len(set(uploads)) > 10  # still spread over the uploads, not one moment again and again


def test_each_case_is_reported_after_its_files_are_judged_and_then_its_outputs_are_freed(tmp_path: Path) -> None:
    """A case is judged (context, history, files, the cleanup check) on a judge thread while
    the next case runs. Its report, the live line a user reads, must still come after all of
    that, and its outputs are removed then instead of piling up until the session ends."""
    from pipeline_runtime.chaos.engine import CaseResult, ChaosConfig, ChaosReport, Session

    seen: dict[int, tuple[list[str], bool]] = {}

    def on_case(case: CaseResult, report: ChaosReport) -> None:
        seen[case.index] = ([d.where for d in case.differences], (session.workdir / f"case-{case.index}/out").exists())

    config = ChaosConfig("tests.chaos.buggy:Appends", {"out": "out"}, kills=8, seed=2, compare_dir="out")
    session = Session(config, on_case)
    report = session.run()
    assert sorted(seen) == list(range(8))
    assert {c.index: [d.where for d in c.differences] for c in report.cases} == {i: w for i, (w, _) in seen.items()}
    assert any("file" in where for where, _ in seen.values())
    assert not any(left for _, left in seen.values())
    assert not session.workdir.exists()

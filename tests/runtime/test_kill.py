"""Kill the real `pipeline-runtime` process at many moments; resume; compare outputs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.chaos.judge import step_commits
from tests.runtime.conftest import Runtime, RuntimeProcess, output, run_argv, termination

CHAIN = "tests.runtime.pipelines_for_tests:Chain"
COUNTING = "tests.runtime.pipelines_for_tests:Counting"
GENERATED = "tests.runtime.pipelines_for_tests:Generated"


def chain_args(uri: str, out: Path, attempt: int, run_id: str = "r1", mb: int = 4) -> list[str]:
    return run_argv(CHAIN, {"mb": mb, "out": str(out)}, uri, attempt, run_id)


def finish(runtime: Runtime, args_for: Any, first_attempt: int) -> int:
    """Resume with increasing attempts until one succeeds; return the last attempt."""
    attempt = first_attempt
    while True:
        code, out, _ = runtime.run(args_for(attempt))
        assert code in (0,), f"attempt {attempt} exited {code}:\n{out}"
        return attempt


def assert_no_committed_step_ran_again(runtime: Runtime, info: dict[str, Any]) -> None:
    committed = step_commits(info["history"])
    for step_name, attempt, _ in runtime.executions():
        first = committed.get(step_name)
        assert first is None or first >= attempt, (
            f"step {step_name} ran in attempt {attempt} although attempt {first} committed it"
        )


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("reference")
    rt = Runtime(tmp)
    out = tmp / "out.txt"
    started = time.monotonic()
    code, text, term = rt.run(chain_args(f"file://{tmp}/ck", out, 1))
    seconds = time.monotonic() - started
    assert code == 0, text
    assert term is not None and term["reason"] == "Succeeded"
    info = rt.inspect(f"file://{tmp}/ck", "r1")
    return {"out": out.read_bytes(), "context": info["context"], "seconds": seconds}


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
def test_sigkill_at_any_moment_resumes_to_identical_output(
    runtime: Runtime, tmp_path: Path, reference: dict[str, Any], fraction: float
) -> None:
    uri, out = f"file://{tmp_path}/ck", tmp_path / "out.txt"
    proc = runtime.start(chain_args(uri, out, 1))
    # The kill moment is the parameter under test: a fraction of a clean run's time.
    time.sleep(fraction * reference["seconds"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finish(runtime, lambda a: chain_args(uri, out, a), 2)
    info = runtime.inspect(uri, "r1")
    assert out.read_bytes() == reference["out"]
    assert info["context"] == reference["context"]
    assert info["completed_steps"] == ["a", "b", "c", "d", "e"]
    assert_no_committed_step_ran_again(runtime, info)


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["artifact-before:1", "artifact-before:3", "commit-before:3", "commit-before:4"])
def test_killed_around_uploads_and_commit_resumes(
    runtime: Runtime, tmp_path: Path, reference: dict[str, Any], pause_at: str
) -> None:
    uri, out = f"file://{tmp_path}/ck", tmp_path / "out.txt"
    marker = tmp_path / "paused"
    proc = runtime.start(
        chain_args(uri, out, 1), env={"RESPAWN_CHAOS_PAUSE_AT": pause_at, "RESPAWN_CHAOS_MARKER": str(marker)}
    )
    wait_for(marker.exists, 60, f"the runtime to reach {pause_at}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finish(runtime, lambda a: chain_args(uri, out, a), 2)
    info = runtime.inspect(uri, "r1")
    assert out.read_bytes() == reference["out"]
    assert info["context"] == reference["context"]
    assert_no_committed_step_ran_again(runtime, info)
    # The killed write never became a commit: attempt 1 committed fewer than all steps.
    committed_by_1 = [s for s, a in step_commits(info["history"]).items() if a == 1]
    assert len(committed_by_1) < 5


@pytest.mark.slow
def test_sigterm_commits_progress_and_exits_143(runtime: Runtime, tmp_path: Path) -> None:
    uri, out = f"file://{tmp_path}/ck", tmp_path / "out.txt"
    args = [
        "run",
        COUNTING,
        "--params",
        f'{{"out": "{out}", "chunks": 300}}',
        "--run-id",
        "c1",
        "--checkpoint-uri",
        uri,
        "--retain",
        "Always",
    ]
    proc = runtime.start([*args, "--attempt", "1"])
    wait_for(lambda: any(s == "accumulate" for s, _, _ in runtime.executions()), 60, "the long step to start")
    time.sleep(0.5)  # let it get well into the step: the moment of SIGTERM is the input
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert time.monotonic() - sent < 10
    term = termination(proc)
    assert term is not None and term["reason"] == "Terminated" and term["exitCode"] == 143
    info = runtime.inspect(uri, "c1")
    assert info["kind"] == "progress" and info["progress"]["step"] == "accumulate"
    saved_i = info["progress"]["state"]["i"]
    assert 0 < saved_i < 300

    code, text, _ = runtime.run([*args, "--attempt", "2"])
    assert code == 0, text
    resumed = [(a, i) for s, a, i in runtime.executions() if s == "accumulate"]
    assert resumed == [(1, 0), (2, saved_i)]
    assert [s for s, _, _ in runtime.executions()].count("prepare") == 1
    expected = sum(range(300)) * sum(range(1000))
    assert int(out.read_text()) == expected


def test_sigterm_inside_a_step_without_safe_points_exits_143_by_deadline(runtime: Runtime, tmp_path: Path) -> None:
    proc = runtime.start(
        [
            "run",
            "tests.runtime.pipelines_for_tests:Stubborn",
            "--run-id",
            "s1",
            "--checkpoint-uri",
            f"file://{tmp_path}/ck",
            "--term-deadline",
            "1.5",
        ]
    )
    wait_for(runtime.executions, 60, "the step to start")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert 1.4 < time.monotonic() - sent < 8
    term = termination(proc)
    assert term is not None and "deadline" in term["message"]


def ready(proc: RuntimeProcess, timeout: float = 30) -> None:
    """Wait for the runtime's first line: from then on a signal is handled, not fatal."""
    wait_for(lambda: '"event": "ready"' in proc.output_log.read_text(), timeout, "the readiness line")


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08, 0.2])
def test_sigterm_right_after_start_exits_143(runtime: Runtime, tmp_path: Path, delay: float) -> None:
    # The handler is installed before the slow imports: a stop at start-up still exits 143.
    proc = runtime.start(["run", CHAIN, "--run-id", f"early{delay}", "--checkpoint-uri", f"file://{tmp_path}/ck"])
    ready(proc)
    time.sleep(delay)  # the kill moment is the input: during the slow imports and the claim
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143, output(proc)


def test_ctrl_c_is_a_safe_stop_that_exits_130(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    proc = runtime.start(chain_args(uri, tmp_path / "out", 1, run_id="ctrlc"))
    wait_for(lambda: '"kind": "step"' in proc.output_log.read_text(), 60, "a first step commit")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    text = output(proc)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    term = termination(proc)
    assert term is not None and term["exitCode"] == 130 and "SIGINT" in term["message"]
    assert runtime.inspect(uri, "ctrlc")["completed_steps"]  # it committed before stopping


def test_a_signal_after_the_final_commit_exits_0(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    for i in range(4):
        proc = runtime.start(
            ["run", CHAIN, "--params", '{"mb": 0, "work_s": 0}', "--run-id", f"late{i}", "--checkpoint-uri", uri]
        )
        wait_for(
            lambda: '"event": "succeeded"' in proc.output_log.read_text() or proc.poll() is not None,
            60,
            "the run to succeed",
        )
        proc.send_signal(signal.SIGTERM)  # during shutdown, when the default handler is back
        assert proc.wait(30) == 0, output(proc)


def test_failed_step_exits_1_and_keeps_earlier_commits(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    code, text, term = runtime.run(
        ["run", "tests.runtime.pipelines_for_tests:Broken", "--run-id", "b1", "--checkpoint-uri", uri]
    )
    assert code == 1
    assert "the input is on fire" in text
    assert term is not None and term["reason"] == "StepFailed" and term["step"] == "two"
    info = runtime.inspect(uri, "b1")
    assert info["completed_steps"] == ["one"]
    assert info["steps_summary"]["two"]["status"] == "failed"
    assert os.path.isdir(tmp_path / "ck")


def test_inspect_after_a_kill_inside_a_step_does_not_list_that_step_as_done(runtime: Runtime, tmp_path: Path) -> None:
    """Issue 10 item 7: SIGKILLed while step 4 of five saves progress, `inspect --json` named
    step 4 in the newest history entry (a progress commit's `step` is the step in progress),
    and the resumed attempt "ran it again" ("2 steps run, 3 skipped"): it continued step 4
    from its saved progress, as it should. What inspect lists as done must be what the next
    attempt skips; the step in progress is `in_step`."""
    from pipeline_runtime.chaos.interrupt import interrupt, pause_env

    uri, out, marker = f"file://{tmp_path}/ck", tmp_path / "out.txt", tmp_path / "paused"
    plan = [["floats", 0], ["zeros", 0], ["tuple", 0], ["big", 3], ["order", 0]]

    def argv(attempt: int) -> list[str]:
        return run_argv(GENERATED, {"plan": plan, "out": str(out)}, uri, attempt, "r1")

    env = {"RESPAWN_PROGRESS_INTERVAL_SECONDS": "0"}
    # Commits: claim, s0, s1, s2, then s3's progress 1, 2, 3: held before the third.
    proc = runtime.start(argv(1), {**env, **pause_env("commit-before", 7, marker)})
    code, sent = interrupt(proc, marker.exists, signal.SIGKILL, timeout=60)
    assert sent and code == -signal.SIGKILL, output(proc)
    info = runtime.inspect(uri, "r1")
    listed = set(info["completed_steps"]) | {h["step"] for h in info["history"] if h["step"]}
    code, text, term = runtime.run(argv(2), env)
    assert code == 0, text
    ran = [(s, start) for s, a, start in runtime.executions() if a == 2]
    assert ran == [("s3", 2), ("s4", 0)]  # s3 continues from its saved progress
    assert term is not None and term["message"] == "2 steps run, 3 skipped (resumed)"
    assert not listed & {"s3", "s4"}, f"inspect listed {sorted(listed)} as done; the resumed attempt ran s3 and s4"
    newest = info["history"][-1]
    assert (newest["kind"], newest["step"], newest.get("in_step")) == ("progress", "s2", "s3")

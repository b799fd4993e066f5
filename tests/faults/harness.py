"""Judging a run after faults: output, history, executions (a Jepsen-style check).

The history checks are pipeline_runtime.chaos.judge, the same code `pipeline-runtime
chaos` judges users' pipelines with; this module adds the output and inspect checks of
the suite's own pipelines.

A run "finished correctly" when its last attempt exited 0, its output file is
byte-identical to a clean run's, and `inspect --json` shows the clean run's
context and every step completed. On top of that the commit history and the
EXEC_LOG (one line per step start, see tests/runtime/pipelines_for_tests.py) are
checked for the two things that must never happen:

* lost: a later commit (or a resumed step) that does not carry what an earlier
  commit had landed: completed steps that went missing, intra-step progress that
  went backwards;
* duplicates: a step that started again in an attempt although an earlier
  attempt's commit of it had landed, or a commit by an attempt older than one
  that had already claimed the run (a fenced writer getting through).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.chaos.interrupt import interrupt, pause_env, signal_number
from pipeline_runtime.chaos.judge import fenced_writes, lost_in_history, reran_after_commit
from pipeline_runtime.chaos.judge import history as full_history
from tests.faults.pipelines import CHAIN, CHAIN_STEPS, SWEEP, SWEEP_STEPS
from tests.runtime.conftest import Runtime, RuntimeProcess, output, run_argv, termination

__all__ = ["fenced_writes", "full_history", "lost_in_history", "reran_after_commit"]

PIPELINES: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "sweep": (SWEEP, SWEEP_STEPS, {"mb": 2, "chunks": 12, "work_s": 0.03}),
    "chain": (CHAIN, CHAIN_STEPS, {"mb": 2, "work_s": 0.08}),
}
"""name -> (pipeline, steps, params without `out`)."""

FAULT_ENV = {"RESPAWN_PROGRESS_INTERVAL_SECONDS": "0.05"}
"""Progress commits every 50 ms, so a kill inside `scan` finds progress to resume from."""


def checkpoint_uri(store: str, tmp_path: Path, request: pytest.FixtureRequest, bucket: str) -> str:
    """The checkpoint URI of a test parametrized over stores: `file` under `tmp_path`, or
    `gs` in a fresh `bucket` on the session's GCS emulator (started only when asked for)."""
    if store == "gs":
        return f"gs://{request.getfixturevalue('gcs_emulator').make_bucket(bucket)}/ck"
    return f"file://{tmp_path}/ck"


def run_args(
    pipeline: str,
    uri: str,
    out: Path,
    attempt: int,
    run_id: str = "r1",
    tenant: str = "default",
    retain: str = "Always",
    **params: Any,
) -> list[str]:
    target, _, defaults = PIPELINES[pipeline]
    return run_argv(target, {**defaults, **params, "out": str(out)}, uri, attempt, run_id, retain, tenant)


@dataclass
class Reference:
    """A clean run's results."""

    out: bytes
    context: dict[str, Any]
    seconds: float


_REFS: dict[str, Reference] = {}
_REFS_LOCK = threading.Lock()


def reference(pipeline: str, tmp: Path) -> Reference:
    """The clean run of `pipeline` (computed once per session, on file://)."""
    with _REFS_LOCK:
        if pipeline not in _REFS:
            tmp.mkdir(parents=True, exist_ok=True)
            rt = Runtime(tmp)
            out = tmp / "out.txt"
            uri = f"file://{tmp}/ck"
            started = time.monotonic()
            code, text, _ = rt.run(run_args(pipeline, uri, out, 1), env=FAULT_ENV)
            seconds = time.monotonic() - started
            assert code == 0, text
            _REFS[pipeline] = Reference(out.read_bytes(), rt.inspect(uri, "r1")["context"], seconds)
        return _REFS[pipeline]


@dataclass
class Verdict:
    correct: bool
    lost: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def verify(
    rt: Runtime,
    uri: str,
    run_id: str,
    pipeline: str,
    out: Path,
    tenant: str = "default",
    last_code: int = 0,
    ref: Reference | None = None,
) -> Verdict:
    """Judge a run that should have finished; never raises on a wrong result."""
    _, steps, _ = PIPELINES[pipeline]
    ref = ref or _REFS[pipeline]
    problems: list[str] = []
    if last_code != 0:
        problems.append(f"last attempt exited {last_code}")
    if not out.exists() or out.read_bytes() != ref.out:
        problems.append("output differs from the clean run")
    try:
        info = rt.inspect(uri, run_id, tenant)
    except AssertionError as e:
        return Verdict(False, problems=[*problems, f"inspect failed: {e}"])
    if info["context"] != ref.context:
        problems.append("checkpoint context differs from the clean run")
    if info["completed_steps"] != steps:
        problems.append(f"completed steps {info['completed_steps']}")
    history = full_history(uri, run_id, tenant)
    lost, why_lost = lost_in_history(history)
    fenced, why_fenced = fenced_writes(history)
    reran, regressed, why_reran = reran_after_commit(rt.executions(), history)
    lost += regressed
    problems += why_lost + why_fenced + why_reran
    duplicates = fenced + reran
    return Verdict(not problems, lost, duplicates, problems)


# -- generated pipelines (tests/runtime/pipelines_for_tests.py:Generated) ----------------

GENERATED = "tests.runtime.pipelines_for_tests:Generated"
GENERATED_ENV = {"RESPAWN_PROGRESS_INTERVAL_SECONDS": "0"}
"""Every save_progress commits: kills and gates land inside steps too."""
EXPECTED_EXIT = {"KILL": {-signal.SIGKILL}, "TERM": {143}, "INT": {130}}


def generated_args(
    plan: list[tuple[str, int]],
    uri: str,
    out: Path,
    attempt: int,
    run_id: str,
    tenant: str = "default",
    retain: str = "Always",
    rerun_from: str | None = None,
) -> list[str]:
    """`pipeline-runtime run` of Generated with `plan`."""
    return run_argv(GENERATED, {"plan": plan, "out": str(out)}, uri, attempt, run_id, retain, tenant, rerun_from)


def newest_completed(uri: str, run_id: str, tenant: str = "default") -> list[str] | None:
    """The completed steps of the newest readable commit, as `inspect --json` lists them (its
    `real[-1]`): what the next attempt must claim and skip. None after a tombstone (the next
    attempt then starts over or finds the run done, by its outcome)."""
    real = [h for h in full_history(uri, run_id, tenant) if "error" not in h and h.get("kind") != "stub"]
    if not real:
        return []
    return None if real[-1].get("kind") == "tombstone" else list(real[-1]["completed_steps"])


def claims_disagree(history: list[dict[str, Any]], expected: dict[int, list[str] | None]) -> list[str]:
    """Attempts whose claim kept other steps than the newest commit before them listed
    (issue 10 item 7: inspect listed a step as completed, the resumed attempt ran it again)."""
    claims = {h["attempt"]: h["completed_steps"] for h in history if h.get("kind") == "claim"}
    return [
        f"attempt {a} claimed {claims[a]}, but the newest commit before it listed {want}"
        for a, want in sorted(expected.items())
        if want is not None and a in claims and claims[a] != want
    ]


def commits_seen(proc: RuntimeProcess) -> int:
    return output(proc).count('"event": "commit"')


def interrupt_as_drawn(rt: Runtime, argv: list[str], kind: str, n: int, tmp: Path) -> int | None:
    """Start an attempt and interrupt it as drawn: KILL/TERM/INT after `n` commits, or a
    SIGKILL while paused before the nth artifact upload (pause-artifact) or before commit
    n + 1 (pause-commit). Its exit code, or None if it finished first."""
    marker = tmp / f"paused-{rt.count}"
    env = dict(GENERATED_ENV)
    if kind == "pause-artifact":
        n = 1 + (n - 1) % 3  # a run uploads only a few artifacts: aim at those
    if kind.startswith("pause-"):
        env.update(
            pause_env(*(("artifact-before", n) if kind == "pause-artifact" else ("commit-before", n + 1)), marker)
        )
    proc = rt.start(argv, env)
    if kind.startswith("pause-"):
        code, sent = interrupt(proc, marker.exists, signal.SIGKILL, timeout=60)
    else:
        code, sent = interrupt(proc, lambda: commits_seen(proc) >= n, signal_number(kind), timeout=60)
    if not sent or code == 0:  # it finished before the moment, or between our look and the signal
        assert code == 0, f"{kind} after {n}: exit {code}\n{output(proc)}"
        return None
    assert code in EXPECTED_EXIT.get(kind, {-signal.SIGKILL}), f"{kind} after {n}: exit {code}\n{output(proc)}"
    return code


# -- attempts alive at once, held at gates (tests/runtime/pipelines_for_tests.py:gate) ----


@dataclass
class Play:
    """Attempts of one run started, held, released and awaited by script.

    A script is a list of operations on numbered attempts:
      ("start", n, gate)  start attempt n, holding at `gate` (None: run freely)
      ("held", n)         wait until attempt n holds at its gate
      ("release", n)      let attempt n carry on
      ("kill", n)         SIGKILL attempt n
      ("exit", n, codes)  wait for attempt n to end with one of `codes`
    """

    rt: Runtime
    tmp: Path
    argv: Callable[[int], list[str]]
    """The command line of attempt n."""
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[int, RuntimeProcess] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)

    def gate_file(self, n: int) -> Path:
        return self.tmp / f"gate-{n}"

    def holding(self, n: int) -> bool:
        return Path(f"{self.gate_file(n)}.waiting").exists()

    def do(self, op: tuple[Any, ...]) -> None:
        kind, n = op[0], op[1]
        if kind == "start":
            env = dict(self.env)
            if op[2]:
                env.update(GATE=op[2], GATE_FILE=str(self.gate_file(n)))
            self.procs[n] = self.rt.start(self.argv(n), env=env)
        elif kind == "held":
            proc = self.procs[n]
            wait_for(lambda: self.holding(n) or proc.poll() is not None, 60, f"attempt {n} to hold at its gate")
            assert proc.poll() is None, f"attempt {n} ended ({proc.returncode}) before its gate"
        elif kind == "release":
            self.gate_file(n).write_text("go")
        elif kind == "kill":
            self.procs[n].send_signal(signal.SIGKILL)
        elif kind == "exit":
            self.codes[n] = self.procs[n].wait(90)
            assert self.codes[n] in op[2], (
                f"attempt {n} exited {self.codes[n]}, expected {sorted(op[2])}: {termination(self.procs[n])}"
            )

    def stop_all(self) -> None:
        """SIGKILL every attempt still running (a failed script leaves no process behind)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

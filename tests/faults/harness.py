"""Judging a run after faults: output, history, executions (a Jepsen-style check).

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

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime.checkpoint import RunLog
from pipeline_runtime.storage import open_store
from tests.faults.pipelines import CHAIN, CHAIN_STEPS, SWEEP, SWEEP_STEPS
from tests.runtime.conftest import Runtime
from tests.runtime.test_kill import step_commits

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


def run_args(pipeline: str, uri: str, out: Path, attempt: int, run_id: str = "r1",
             tenant: str = "default", retain: str = "Always", **params: Any) -> list[str]:
    import json

    target, _, defaults = PIPELINES[pipeline]
    merged = {**defaults, **params, "out": str(out)}
    return ["run", target, "--params", json.dumps(merged), "--run-id", run_id,
            "--checkpoint-uri", uri, "--attempt", str(attempt), "--retain", retain,
            "--tenant", tenant]


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
            _REFS[pipeline] = Reference(out.read_bytes(), rt.inspect(uri, "r1")["context"],
                                        seconds)
        return _REFS[pipeline]


def full_history(uri: str, run_id: str, tenant: str = "default") -> list[dict[str, Any]]:
    """Every commit body (not just inspect's summary): progress states included."""
    return RunLog(open_store(uri), tenant, run_id).history()


def progress_index(body: dict[str, Any]) -> tuple[str, int] | None:
    """(step, i) of a commit's saved intra-step progress, for pipelines that save {"i": ..}."""
    progress = body.get("progress")
    if not progress:
        return None
    node = progress["state"]
    if "json" in node and isinstance(node["json"], dict) and "i" in node["json"]:
        return progress["step"], int(node["json"]["i"])
    if "dict" in node and "i" in node["dict"]:
        return progress["step"], int(node["dict"]["i"]["json"])
    return None


@dataclass
class Verdict:
    correct: bool
    lost: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def lost_in_history(history: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Committed steps or progress that a later commit dropped."""
    lost, problems = 0, []
    prev: dict[str, Any] | None = None
    for body in history:
        if "error" in body or body.get("kind") in ("stub", "tombstone"):
            continue
        if prev is not None:
            before, now = prev["completed_steps"], body["completed_steps"]
            common = 0
            while common < min(len(before), len(now)) and before[common] == now[common]:
                common += 1
            if common < len(before):
                lost += len(before) - common
                problems.append(f"commit {body['seq']} dropped committed steps "
                                f"{before[common:]}")
            was, is_ = progress_index(prev), progress_index(body)
            if was and now == before and (is_ is None or is_[0] != was[0] or is_[1] < was[1]):
                lost += 1
                problems.append(f"commit {body['seq']} lost progress {was} (has {is_})")
        prev = body
    return lost, problems


def fenced_writes(history: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Commits by an attempt older than one that had already claimed the run."""
    bad, problems, highest = 0, [], 0
    for body in history:
        attempt = body.get("attempt")
        if not isinstance(attempt, int) or body.get("kind") == "stub":
            continue
        if attempt < highest:
            bad += 1
            problems.append(f"commit {body['seq']} by attempt {attempt} after attempt "
                            f"{highest} claimed the run")
        highest = max(highest, attempt)
    return bad, problems


def reran_after_commit(executions: list[tuple[str, int, int]],
                       history: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(duplicates, lost, problems): step starts in an attempt later than the one whose commit of that step landed;
    and resumed progress that started before the committed progress."""
    summary = [{"kind": h.get("kind"), "step": h.get("step"), "attempt": h.get("attempt")}
               for h in history if "error" not in h]
    committed = step_commits(summary)
    dups, lost, problems = 0, 0, []
    for name, attempt, _ in executions:
        first = committed.get(name)
        if first is not None and first < attempt:
            dups += 1
            problems.append(f"step {name} ran in attempt {attempt} although attempt {first} "
                            "had committed it")
    claims = {h["attempt"]: h for h in history if h.get("kind") == "claim"}
    for name, attempt, start in executions:
        claim = claims.get(attempt)
        saved = progress_index(claim) if claim else None
        if saved and saved[0] == name and start < saved[1]:
            lost += 1
            problems.append(f"step {name} resumed at {start} in attempt {attempt}, but "
                            f"progress {saved[1]} was committed")
    return dups, lost, problems


def verify(rt: Runtime, uri: str, run_id: str, pipeline: str, out: Path,
           tenant: str = "default", last_code: int = 0,
           ref: Reference | None = None) -> Verdict:
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

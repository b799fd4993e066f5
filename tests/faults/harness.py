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

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime.chaos.judge import fenced_writes, lost_in_history, reran_after_commit
from pipeline_runtime.chaos.judge import history as full_history
from tests.faults.pipelines import CHAIN, CHAIN_STEPS, SWEEP, SWEEP_STEPS
from tests.runtime.conftest import Runtime

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
    import json

    target, _, defaults = PIPELINES[pipeline]
    merged = {**defaults, **params, "out": str(out)}
    return [
        "run",
        target,
        "--params",
        json.dumps(merged),
        "--run-id",
        run_id,
        "--checkpoint-uri",
        uri,
        "--attempt",
        str(attempt),
        "--retain",
        retain,
        "--tenant",
        tenant,
    ]


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

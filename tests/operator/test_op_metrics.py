"""The metrics the chart's dashboard and alerts read: exported, and fed from what the operator knows.

``respawn_attempt_pending_oldest_seconds`` (an attempt Pending too long),
``respawn_preemption_lost_seconds_total`` (time lost to preemptions) and
``respawn_reconcile_errors_total{kind}`` (the operator erroring) exist for them.
"""

from __future__ import annotations

import asyncio
import gc
import time

import kopf
import pytest
from prometheus_client import REGISTRY, generate_latest
from respawn_operator import metrics
from respawn_operator.reconciler import Reconciler
from respawn_operator.spec import AttemptOutcome, AttemptRecord, CheckpointRef, Phase, PipelineRunStatus
from respawn_operator.workqueue import Retry

from tests.operator.test_op_run_cache import KEY, FakeApi, reconciler


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    assert value is not None, f"{name}{labels or ''} is not exported"
    return value


def test_the_new_metrics_are_exported() -> None:
    text = generate_latest().decode()
    for family in (
        "respawn_attempt_pending_oldest_seconds",
        "respawn_preemption_lost_seconds_total",
        "respawn_reconcile_errors_total",
    ):
        assert f"# TYPE {family} " in text, family


def _status(phase: Phase, **rec: object) -> PipelineRunStatus:
    record = AttemptRecord(attempt=2, job="r-2", start_time="2026-01-01T00:00:00Z", **rec)  # type: ignore[arg-type]
    return PipelineRunStatus(phase=phase, attempt=2, attempts=[record])


def test_an_open_attempt_of_a_pending_or_retrying_run_is_pending_since_its_start() -> None:
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert metrics.pending_since(_status(Phase.PENDING)) == start
    assert metrics.pending_since(_status(Phase.RETRYING)) == start
    assert metrics.pending_since(_status(Phase.RUNNING)) is None
    assert metrics.pending_since(_status(Phase.RETRYING, stopping="Suspended")) is None
    # Waiting out a failure backoff: the last attempt ended, no pod is awaited.
    assert metrics.pending_since(_status(Phase.RETRYING, outcome=AttemptOutcome.FAILED)) is None
    assert metrics.pending_since(PipelineRunStatus(phase=Phase.PENDING)) is None


def test_the_oldest_pending_attempt_is_read_at_scrape_time() -> None:
    # Reconcilers of earlier tests are unreachable but not yet collected (each is a cycle:
    # its queue holds its bound methods); their books would still count until then.
    gc.collect()
    book = metrics.PhaseBook()
    assert _value("respawn_attempt_pending_oldest_seconds") == 0.0
    book.set(("ns", "a"), "Pending", pending_since=time.time() - 600)
    book.set(("ns", "b"), "Retrying", pending_since=time.time() - 60)
    assert 600 <= _value("respawn_attempt_pending_oldest_seconds") < 660
    book.set(("ns", "a"), "Running")  # its pod runs: no longer pending
    assert 60 <= _value("respawn_attempt_pending_oldest_seconds") < 120
    book.set(("ns", "b"), None)
    assert _value("respawn_attempt_pending_oldest_seconds") == 0.0


def test_a_reconcile_that_starts_an_attempt_counts_it_pending() -> None:
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))  # attempt 1's Job is created; no pod yet
    assert api.run["status"]["phase"] == "Pending"
    assert KEY in rec.phases._pending
    assert _value("respawn_attempt_pending_oldest_seconds") >= 0.0
    rec.phases.set(KEY, None)


def test_time_lost_to_a_preemption_runs_from_the_last_checkpoint_of_the_attempt() -> None:
    rec = AttemptRecord(attempt=2, job="r-2", start_time="2026-01-01T00:00:00Z", end_time="2026-01-01T01:00:00Z")
    at = CheckpointRef(step="s3", seq=3, at="2026-01-01T00:45:00Z", attempt=2)
    assert metrics.lost_seconds(rec, PipelineRunStatus(last_checkpoint=at)) == 900.0
    # No checkpoint, or only one from an earlier attempt: the whole attempt is redone.
    assert metrics.lost_seconds(rec, PipelineRunStatus()) == 3600.0
    earlier = CheckpointRef(step="s1", seq=1, at="2025-12-31T23:00:00Z", attempt=1)
    assert metrics.lost_seconds(rec, PipelineRunStatus(last_checkpoint=earlier)) == 3600.0
    assert metrics.lost_seconds(AttemptRecord(attempt=2, job="r-2"), PipelineRunStatus()) is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (Retry("429 Too Many Requests"), "api"),
        (kopf.TemporaryError("create retire Job: 500"), "api"),
        (RuntimeError("a bug"), "crash"),
    ],
)
def test_a_failed_reconcile_is_counted_by_kind(exc: BaseException, kind: str) -> None:
    before = REGISTRY.get_sample_value("respawn_reconcile_errors_total", {"kind": kind}) or 0.0
    Reconciler._failed(KEY, exc, 2, 1.0)
    assert _value("respawn_reconcile_errors_total", {"kind": kind}) == before + 1


def test_a_preempted_attempt_adds_its_lost_time() -> None:
    from respawn_operator.classify import Charge, Outcome
    from respawn_operator.reconcile import Decision

    api = FakeApi()
    rec, _ = reconciler(api)
    ended = AttemptRecord(
        attempt=1,
        job="r-1",
        start_time="2026-01-01T00:00:00Z",
        end_time="2026-01-01T00:10:00Z",
        outcome=AttemptOutcome.PREEMPTED,
        reason="NodeLost",
    )
    status = PipelineRunStatus(
        phase=Phase.RETRYING,
        attempt=1,
        attempts=[ended],
        last_checkpoint=CheckpointRef(step="s1", seq=1, at="2026-01-01T00:08:00Z", attempt=1),
    )
    d = Decision(status=status, ended=(ended, Outcome(AttemptOutcome.PREEMPTED, "NodeLost", "", Charge.PREEMPTION)))
    before = _value("respawn_preemption_lost_seconds_total")
    asyncio.run(rec.executor.execute(api.snapshot(), d))
    assert _value("respawn_preemption_lost_seconds_total") == before + 120.0


def test_a_run_turning_failed_is_counted_once() -> None:
    from respawn_operator.reconcile import set_condition
    from respawn_operator.timeutil import now

    labels = {"phase": "Failed", "reason": "MaxPreemptionsExceeded"}
    before = REGISTRY.get_sample_value("respawn_runs_finished_total", labels) or 0.0
    failed = PipelineRunStatus(phase=Phase.FAILED)
    set_condition(failed, "Succeeded", "False", "MaxPreemptionsExceeded", "budget spent", 1, now())
    metrics.count_finish({"phase": "Retrying"}, failed)
    assert _value("respawn_runs_finished_total", labels) == before + 1
    metrics.count_finish({"phase": "Failed"}, failed)  # a later round of the failed run (or a restart)
    metrics.count_finish(None, PipelineRunStatus(phase=Phase.RUNNING))
    assert _value("respawn_runs_finished_total", labels) == before + 1

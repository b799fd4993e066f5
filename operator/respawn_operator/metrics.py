"""Prometheus metrics, served on /metrics by ``prometheus_client``."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from respawn_operator.spec import AttemptRecord, ConditionType, Phase, PipelineRunStatus
from respawn_operator.timeutil import parse

if TYPE_CHECKING:
    from respawn_operator.reconcile import Decision

RUNS = Gauge("respawn_pipelineruns", "PipelineRuns known to this operator, by phase", ["phase"])
RUNS_FINISHED = Counter(
    "respawn_runs_finished_total",
    "Runs this operator saw turn Succeeded or Failed, by phase and reason",
    ["phase", "reason"],
)
ATTEMPTS_STARTED = Counter("respawn_attempts_started_total", "Attempt Jobs created")
ATTEMPTS_ENDED = Counter(
    "respawn_attempts_ended_total", "Attempts that ended, by outcome and reason", ["outcome", "reason"]
)
PREEMPTIONS = Counter("respawn_preemptions_total", "Attempts lost to the infrastructure, by reason", ["reason"])
FAILURES = Counter("respawn_failures_total", "Attempts lost to the pipeline's own errors, by reason", ["reason"])
ATTEMPT_SECONDS = Histogram(
    "respawn_attempt_duration_seconds",
    "Wall time of ended attempts, by outcome",
    ["outcome"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
RECONCILE_SECONDS = Histogram(
    "respawn_reconcile_duration_seconds",
    "Time of one reconcile of one run",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_ERRORS = Counter("respawn_api_errors_total", "API errors met while reconciling, by kind", ["kind"])
RECONCILE_ERRORS = Counter(
    "respawn_reconcile_errors_total",
    "Reconciles that failed and are retried with backoff, by kind: api (an API error) or crash (a bug)",
    ["kind"],
)
PREEMPTION_LOST_SECONDS = Counter(
    "respawn_preemption_lost_seconds_total",
    "Wall time of preempted attempts after their last committed checkpoint (all of it if they committed none): "
    "work the next attempt redoes",
)
OLDEST_PENDING_SECONDS = Gauge(
    "respawn_attempt_pending_oldest_seconds",
    "Age of the oldest attempt whose Job exists but whose pod is not running yet (0: none)",
)

_BOOKS: weakref.WeakSet[PhaseBook] = weakref.WeakSet()


def _oldest_pending_seconds() -> float:
    starts = [since for book in list(_BOOKS) for since in book._pending.values()]
    return max(0.0, time.time() - min(starts)) if starts else 0.0


OLDEST_PENDING_SECONDS.set_function(_oldest_pending_seconds)


class PhaseBook:
    """Keeps the phase of every run so the RUNS gauge is exact, not a running sum, and
    since when its attempt waits for its pod (OLDEST_PENDING_SECONDS, read at scrape)."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._pending: dict[tuple[str, str], float] = {}
        _BOOKS.add(self)

    def set(self, key: tuple[str, str], phase: str | None, pending_since: float | None = None) -> None:
        """``pending_since``: the epoch second the run's current attempt started, while its pod is not running."""
        if pending_since is None:
            self._pending.pop(key, None)
        else:
            self._pending[key] = pending_since
        old = self._phases.get(key)
        if old == phase:
            return
        if old is not None:
            RUNS.labels(old).dec()
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
            RUNS.labels(phase).inc()


def pending_since(st: PipelineRunStatus) -> float | None:
    """The epoch second the run's current attempt started if its pod is not running yet, else None.

    An attempt waits for its pod while the run is Pending or Retrying with that attempt open
    (no outcome, not being stopped); a run waiting out a failure backoff has no open attempt.
    """
    if st.phase not in (Phase.PENDING, Phase.RETRYING) or not st.attempts:
        return None
    rec = st.attempts[-1]
    if rec.attempt != st.attempt or rec.outcome is not None or rec.stopping:
        return None
    start = parse(rec.start_time)
    return start.timestamp() if start else None


def lost_seconds(rec: AttemptRecord, st: PipelineRunStatus) -> float | None:
    """Seconds of a preempted attempt the next one redoes: from its last checkpoint (committed
    while it ran; ``st`` as it ended) or from its start, to its end. None: times unknown."""
    start, end = parse(rec.start_time), parse(rec.end_time)
    if start is None or end is None or end < start:
        return None
    at = parse(st.last_checkpoint.at) if st.last_checkpoint else None
    since = at if at is not None and start <= at <= end else start
    return (end - since).total_seconds()


def count_finish(before: dict[str, object] | None, after: PipelineRunStatus) -> None:
    """Count the run in RUNS_FINISHED if this round finished it (``before``: the status it read)."""
    phase = after.phase
    if phase is None or not phase.finished or (before or {}).get("phase") == phase.value:
        return
    cond = next((c for c in after.conditions if c.type == ConditionType.SUCCEEDED), None)
    RUNS_FINISHED.labels(phase.value, (cond.reason if cond else None) or phase.value).inc()


def count_decision(d: Decision) -> None:
    """Count what a carried-out decision did: an attempt started, an attempt ended (how,
    and for a preemption the time it lost)."""
    if d.create_job is not None:
        ATTEMPTS_STARTED.inc()
    if d.ended is None:
        return
    rec, outcome = d.ended
    ATTEMPTS_ENDED.labels(outcome.outcome.value, outcome.reason).inc()
    if outcome.charge.value == "preemption":
        PREEMPTIONS.labels(outcome.reason).inc()
        lost = lost_seconds(rec, d.status)
        if lost is not None:
            PREEMPTION_LOST_SECONDS.inc(lost)
    elif outcome.charge.value == "failure":
        FAILURES.labels(outcome.reason).inc()
    start, end = parse(rec.start_time), parse(rec.end_time)
    if start and end:
        ATTEMPT_SECONDS.labels(outcome.outcome.value).observe((end - start).total_seconds())

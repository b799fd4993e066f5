"""Prometheus metrics, served on /metrics by ``prometheus_client``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Gauge("respawn_pipelineruns", "PipelineRuns known to this operator, by phase", ["phase"])
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


class PhaseBook:
    """Keeps the phase of every run so the RUNS gauge is exact, not a running sum."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def set(self, key: tuple[str, str], phase: str | None) -> None:
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

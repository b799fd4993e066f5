"""Budgets, backoff and deadlines: pure arithmetic over a run's counters.

``maxFailures: 3`` works like a Job's ``backoffLimit``: three failed attempts are
retried, the fourth failure fails the run. The same holds for ``maxPreemptions``.
"""

from __future__ import annotations

import datetime as dt

from respawn_operator.spec import Backoff, Budgets


def exhausted_budget(budgets: Budgets, preemptions: int, failures: int) -> str | None:
    """A message naming the exhausted budget, or ``None`` while the run may go on."""
    if failures > budgets.max_failures:
        return (
            f"budget maxFailures={budgets.max_failures} exhausted: {failures} attempts failed "
            "in the pipeline's own code; fix the error (see status.attempts) or raise spec.budgets.maxFailures"
        )
    if preemptions > budgets.max_preemptions:
        return (
            f"budget maxPreemptions={budgets.max_preemptions} exhausted: {preemptions} attempts lost "
            "to preemption/eviction/node loss; raise spec.budgets.maxPreemptions or set "
            "spec.onDemandAfterPreemptions"
        )
    return None


def failure_backoff(backoff: Backoff, failures: int) -> float:
    """Seconds to wait before the attempt that follows the ``failures``-th failure (doubling, capped)."""
    if failures <= 0:
        return 0.0
    delay = backoff.initial_seconds * (2 ** min(failures - 1, 30))
    return float(min(delay, backoff.max_seconds))


def spot_allowed(on_demand_after: int | None, preemptions: int) -> bool:
    """False once the run was preempted often enough to move to on-demand capacity."""
    return on_demand_after is None or preemptions < on_demand_after


def remaining_deadline(active_deadline_seconds: int | None, start: dt.datetime | None, now: dt.datetime) -> int | None:
    """Seconds left of the run's deadline (at least 1 while any is left, 0 when spent)."""
    if active_deadline_seconds is None:
        return None
    if start is None:
        return active_deadline_seconds
    left = active_deadline_seconds - (now - start).total_seconds()
    return max(0, int(left)) if left < 1 else int(left)

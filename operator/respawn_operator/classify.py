"""Tell how an attempt ended: preempted by the infrastructure, failed by the pipeline, or done.

One pure function, :func:`classify_attempt`, over the objects Kubernetes gives us
(the Job, the last seen pod, whether the pod's node still exists). The order of the
rules is the policy, so it reads top to bottom:

1. what the pipeline itself decided (exit 0, 64, 65, 76) wins over everything;
2. a stop by the operator itself (the pod's ``respawn.dev/stopped`` annotation: suspend,
   re-run, spec change), then the run's own deadline (kubelet's ``DeadlineExceeded`` on the
   pod, or the Job's);
3. a Kueue eviction (Kueue suspends the Job);
4. any sign of the infrastructure: a ``DisruptionTarget`` condition, a pod
   ``status.reason`` of eviction/shutdown/node loss, a vanished node, SIGTERM (143),
   transient infrastructure (75), a pod deleted by someone else → Preempted;
5. everything else the container did (exit 1, OOMKilled, other codes) → Failed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from pipeline_runtime.contracts import ExitCode, Reason
from respawn_operator import ANNOTATION_STOPPED
from respawn_operator.reports import parse_report
from respawn_operator.spec import PIPELINE_CONTAINER, AttemptOutcome

CONTAINER_NAME = PIPELINE_CONTAINER

INFRA_POD_REASONS = frozenset({"Evicted", "Shutdown", "NodeShutdown", "Terminated", "NodeLost", "Preempting"})
"""Pod ``status.reason`` values that the kubelet or node controller set when it stops a pod."""


class Charge(enum.Enum):
    """Which budget an ended attempt is charged to."""

    NONE = "none"
    PREEMPTION = "preemption"
    FAILURE = "failure"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an attempt ended and what that means for the run."""

    outcome: AttemptOutcome
    reason: str
    message: str = ""
    charge: Charge = Charge.NONE
    fatal: bool = False
    """The run fails now, whatever the budgets say (invalid input, incompatible checkpoint, deadline)."""
    exit_code: int | None = None
    report: dict[str, Any] | None = None
    """The runtime's termination report, when there was one."""


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if isinstance(c, dict) and c.get("status") == "True"}


def main_container_status(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    """The status of the pipeline container, found by name only: a sidecar's exit says nothing of the run."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == CONTAINER_NAME:
            return dict(cs)
    return None


def terminated_state(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    """``state.terminated`` of the pipeline container (or its last state), if it ended."""
    cs = main_container_status(pod)
    if not cs:
        return None
    term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
    return dict(term) if term else None


def pod_is_terminal(pod: dict[str, Any] | None) -> bool:
    """True if the pod will not run any more (phase Succeeded/Failed)."""
    return ((pod or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")


def job_finished(job: dict[str, Any] | None) -> bool:
    """True if the Job says it is over (condition Complete or Failed)."""
    conds = _conditions(job)
    return "Complete" in conds or "Failed" in conds


def pod_is_done(pod: dict[str, Any] | None) -> bool:
    """True once the pod's phase is final and none of its containers still runs (a kubelet
    may report the phase while it still stops a container)."""
    if not pod_is_terminal(pod):
        return False
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return not any("running" in (cs.get("state") or {}) for cs in statuses)


def classify_attempt(
    job: dict[str, Any] | None,
    pod: dict[str, Any] | None,
    *,
    node_exists: bool | None = True,
    pod_gone: bool = False,
) -> Outcome | None:
    """Classify an attempt; ``None`` means it has not ended yet.

    ``pod`` is the last state of the attempt's pod we saw (it may be gone since:
    ``pod_gone``); ``node_exists`` is False when the pod's node object has vanished.
    """
    term = terminated_state(pod)
    exit_code = term.get("exitCode") if term else None
    report = parse_report(term.get("message")) if term else None
    detail = (report or {}).get("message") or (term or {}).get("message") or ""
    if not isinstance(detail, str):
        detail = str(detail)
    detail = detail.strip()[:500]
    job_conds = _conditions(job)
    pod_conds = _conditions(pod)
    pod_status = (pod or {}).get("status") or {}
    phase = pod_status.get("phase")
    deleted = bool(((pod or {}).get("metadata") or {}).get("deletionTimestamp")) or pod_gone

    def out(
        outcome: AttemptOutcome, reason: str, charge: Charge = Charge.NONE, fatal: bool = False, message: str = ""
    ) -> Outcome:
        return Outcome(outcome, reason, message or detail, charge, fatal, exit_code, report)

    # 1. The pipeline's own verdict.
    if exit_code == ExitCode.SUCCEEDED or (exit_code is None and "Complete" in job_conds):
        return out(AttemptOutcome.SUCCEEDED, Reason.SUCCEEDED)
    if exit_code == ExitCode.INVALID_INPUT:
        return out(AttemptOutcome.FAILED, Reason.INVALID_INPUT, fatal=True)
    if exit_code == ExitCode.INCOMPATIBLE_CHECKPOINT:
        return out(AttemptOutcome.FAILED, Reason.INCOMPATIBLE_CHECKPOINT, fatal=True)
    if exit_code == ExitCode.SUPERSEDED:
        return out(AttemptOutcome.SUPERSEDED, Reason.SUPERSEDED)

    # 2. The operator stopped it (it lowered the pod's activeDeadlineSeconds and said why), or the
    # run's deadline: the pod carries what is left of it, the Job a later backstop.
    ended_here = term is not None or pod_is_terminal(pod) or pod_gone
    stopped_by = (((pod or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_STOPPED)
    if stopped_by and ended_here:
        return out(AttemptOutcome.STOPPED, str(stopped_by), message="stopped by the operator")
    failed = job_conds.get("Failed")
    if (pod_status.get("reason") == "DeadlineExceeded" and ended_here) or (
        failed and failed.get("reason") == "DeadlineExceeded"
    ):
        return out(AttemptOutcome.FAILED, "DeadlineExceeded", fatal=True, message="spec.activeDeadlineSeconds reached")

    # 3. Kueue evicts a workload by suspending its Job; the Job controller then deletes the pod.
    # A Job Kueue still holds in its queue is suspended too, but never had a pod.
    suspended = ((job or {}).get("spec") or {}).get("suspend") is True
    if suspended and pod is not None and ("Suspended" in job_conds or deleted or pod_is_terminal(pod)):
        cond = job_conds.get("Suspended") or {}
        return out(
            AttemptOutcome.PREEMPTED,
            "KueueEviction",
            Charge.PREEMPTION,
            message=cond.get("message") or "the Job was suspended (Kueue eviction)",
        )

    # 4. The infrastructure took the pod away.
    disruption = pod_conds.get("DisruptionTarget")
    # A pod with a deletionTimestamp may still be committing its checkpoint: it has
    # ended only once its container terminated, its phase is final, or it is gone.
    ended = ended_here
    if disruption and ended:
        reason = disruption.get("reason") or "DisruptionTarget"
        return out(AttemptOutcome.PREEMPTED, reason, Charge.PREEMPTION, message=disruption.get("message") or detail)
    if pod_status.get("reason") in INFRA_POD_REASONS and ended:
        return out(
            AttemptOutcome.PREEMPTED,
            pod_status["reason"],
            Charge.PREEMPTION,
            message=pod_status.get("message") or detail,
        )
    if pod is not None and not pod_is_terminal(pod) and term is None and node_exists is False:
        node = (pod.get("spec") or {}).get("nodeName")
        return out(AttemptOutcome.PREEMPTED, "NodeLost", Charge.PREEMPTION, message=f"node {node} no longer exists")
    if exit_code in (ExitCode.TERMINATED, ExitCode.INTERRUPTED):  # a safe stop either way
        return out(AttemptOutcome.PREEMPTED, "PodDeleted" if deleted else Reason.TERMINATED, Charge.PREEMPTION)
    if exit_code == ExitCode.TRANSIENT_INFRA:
        return out(AttemptOutcome.PREEMPTED, Reason.TRANSIENT_INFRA, Charge.PREEMPTION)
    if term is None and pod_gone and not pod_is_terminal(pod):
        return out(
            AttemptOutcome.PREEMPTED, "PodDeleted", Charge.PREEMPTION, message="the pod was deleted before it finished"
        )
    if pod is None and failed:
        # The Job failed and we never saw a pod end: the pod was removed under it.
        return out(
            AttemptOutcome.PREEMPTED,
            "PodDeleted",
            Charge.PREEMPTION,
            message=failed.get("message") or "the Job's pod disappeared",
        )

    # 5. The container failed on its own.
    if term is not None:
        if term.get("reason") == "OOMKilled":
            return out(
                AttemptOutcome.FAILED,
                "OOMKilled",
                Charge.FAILURE,
                message="the pipeline container ran out of memory: raise spec.resources.limits.memory",
            )
        if exit_code == ExitCode.STEP_FAILED:
            return out(AttemptOutcome.FAILED, Reason.STEP_FAILED, Charge.FAILURE)
        return out(
            AttemptOutcome.FAILED,
            f"ExitCode{exit_code}",
            Charge.FAILURE,
            message=detail or f"the pipeline container exited with code {exit_code}",
        )
    if phase == "Failed" or failed:
        reason = pod_status.get("reason") or (failed or {}).get("reason") or "PodFailed"
        return out(
            AttemptOutcome.FAILED,
            reason,
            Charge.FAILURE,
            message=pod_status.get("message") or (failed or {}).get("message") or "",
        )
    return None


def lost_to_infrastructure(pod: dict[str, Any], *, pod_gone: bool = False, node_exists: bool | None = True) -> bool:
    """True if the last seen state of an attempt's pod says the infrastructure took it
    (preempted, evicted, its node lost): the round that ends the attempt and starts the
    next one goes in the work queue's urgent lane (workqueue.py). The pod alone decides;
    the round itself still classifies the attempt with its Job."""
    outcome = classify_attempt(None, pod, node_exists=node_exists, pod_gone=pod_gone)
    return outcome is not None and outcome.charge is Charge.PREEMPTION

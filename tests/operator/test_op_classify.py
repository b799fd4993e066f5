"""Every way an attempt ends, in one table: classify_attempt is the operator's policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from respawn_operator.classify import Charge, classify_attempt
from respawn_operator.spec import AttemptOutcome as O


def pod(
    phase: str = "Failed",
    exit_code: int | None = None,
    term_reason: str | None = None,
    disruption: str | None = None,
    reason: str | None = None,
    message: Any = None,
    deleting: bool = False,
    node: str = "n1",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if exit_code is not None:
        term: dict[str, Any] = {"exitCode": exit_code}
        if term_reason:
            term["reason"] = term_reason
        if message is not None:
            term["message"] = message if isinstance(message, str) else json.dumps(message)
        status["containerStatuses"] = [{"name": "pipeline", "state": {"terminated": term}}]
    else:
        status["containerStatuses"] = [{"name": "pipeline", "state": {"running": {}}}]
    if disruption:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    if reason:
        status["reason"] = reason
    meta: dict[str, Any] = {"name": "r-a1-xyz"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}


def job(cond: str | None = None, reason: str | None = None, suspend: bool = False) -> dict[str, Any]:
    conds = [{"type": cond, "status": "True", "reason": reason}] if cond else []
    return {"spec": {"suspend": suspend}, "status": {"conditions": conds}}


def stopped(p: dict[str, Any], why: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {"respawn.dev/stopped": why}
    return p


RUNNING = pod("Running")
P, F, N = Charge.PREEMPTION, Charge.FAILURE, Charge.NONE

TABLE = [
    # id, job, pod, kwargs, outcome, reason, charge, fatal
    ("exit0", job("Complete"), pod("Succeeded", 0), {}, O.SUCCEEDED, "Succeeded", N, False),
    ("exit1", job("Failed"), pod("Failed", 1), {}, O.FAILED, "StepFailed", F, False),
    ("exit64", job("Failed"), pod("Failed", 64), {}, O.FAILED, "InvalidInput", N, True),
    ("exit65", job("Failed"), pod("Failed", 65), {}, O.FAILED, "IncompatibleCheckpoint", N, True),
    ("exit75", job("Failed"), pod("Failed", 75), {}, O.PREEMPTED, "TransientInfra", P, False),
    ("exit76", job("Failed"), pod("Failed", 76), {}, O.SUPERSEDED, "Superseded", N, False),
    ("exit143", job("Failed"), pod("Failed", 143), {}, O.PREEMPTED, "Terminated", P, False),
    ("exit2", job("Failed"), pod("Failed", 2), {}, O.FAILED, "ExitCode2", F, False),
    ("oom", job("Failed"), pod("Failed", 137, "OOMKilled"), {}, O.FAILED, "OOMKilled", F, False),
    ("sigkill", job("Failed"), pod("Failed", 137, "Error"), {}, O.FAILED, "ExitCode137", F, False),
    *[
        (f"dt-{r}", job("Failed"), pod("Failed", 143, disruption=r), {}, O.PREEMPTED, r, P, False)
        for r in (
            "PreemptionByScheduler",
            "TerminationByKubelet",
            "EvictionByEvictionAPI",
            "DeletionByTaintManager",
            "DeletionByPodGC",
        )
    ],
    (
        "dt-killed-after-grace",
        job("Failed"),
        pod("Failed", 137, disruption="PreemptionByScheduler"),
        {},
        O.PREEMPTED,
        "PreemptionByScheduler",
        P,
        False,
    ),
    (
        "dt-step-raised-while-stopping",
        job("Failed"),
        pod("Failed", 1, disruption="TerminationByKubelet"),
        {},
        O.PREEMPTED,
        "TerminationByKubelet",
        P,
        False,
    ),
    (
        "dt-but-succeeded",
        job("Complete"),
        pod("Succeeded", 0, disruption="PreemptionByScheduler"),
        {},
        O.SUCCEEDED,
        "Succeeded",
        N,
        False,
    ),
    (
        "dt-but-invalid-input",
        job("Failed"),
        pod("Failed", 64, disruption="PreemptionByScheduler"),
        {},
        O.FAILED,
        "InvalidInput",
        N,
        True,
    ),
    *[
        (f"reason-{r}", job("Failed"), pod("Failed", None, reason=r), {}, O.PREEMPTED, r, P, False)
        for r in ("Evicted", "Shutdown", "NodeShutdown", "Terminated", "NodeLost")
    ],
    ("evicted-with-exit", job("Failed"), pod("Failed", 143, reason="Evicted"), {}, O.PREEMPTED, "Evicted", P, False),
    ("node-gone", job(), RUNNING, {"node_exists": False}, O.PREEMPTED, "NodeLost", P, False),
    ("user-deleted-sigterm", job("Failed"), pod("Failed", 143, deleting=True), {}, O.PREEMPTED, "PodDeleted", P, False),
    ("user-deleted-vanished", job(), RUNNING, {"pod_gone": True}, O.PREEMPTED, "PodDeleted", P, False),
    ("job-failed-no-pod", job("Failed", "BackoffLimitExceeded"), None, {}, O.PREEMPTED, "PodDeleted", P, False),
    ("deadline", job("Failed", "DeadlineExceeded"), pod("Failed", 143), {}, O.FAILED, "DeadlineExceeded", N, True),
    (
        "pod-deadline",  # the run's deadline on the pod: kubelet stopped it, the pod stays
        job("Failed", "BackoffLimitExceeded"),
        pod("Failed", 143, reason="DeadlineExceeded"),
        {},
        O.FAILED,
        "DeadlineExceeded",
        N,
        True,
    ),
    (
        "stopped-by-us",  # the operator lowered the pod's deadline to stop it (suspend, ...)
        job("Failed", "BackoffLimitExceeded"),
        stopped(pod("Failed", 143, reason="DeadlineExceeded"), "Suspended"),
        {},
        O.STOPPED,
        "Suspended",
        N,
        False,
    ),
    (
        "stopped-by-us-sigkill",
        job("Failed", "BackoffLimitExceeded"),
        stopped(pod("Failed", 137, reason="DeadlineExceeded"), "SpecChanged"),
        {},
        O.STOPPED,
        "SpecChanged",
        N,
        False,
    ),
    (
        "stopped-by-us-but-done",  # the pipeline finished just then: its verdict wins
        job("Complete"),
        stopped(pod("Succeeded", 0), "Suspended"),
        {},
        O.SUCCEEDED,
        "Succeeded",
        N,
        False,
    ),
    (
        "kueue-evicted",
        job("Suspended", "JobSuspended", suspend=True),
        pod("Failed", 143),
        {},
        O.PREEMPTED,
        "KueueEviction",
        P,
        False,
    ),
    ("kueue-evicted-pod-gone", job(suspend=True), RUNNING, {"pod_gone": True}, O.PREEMPTED, "KueueEviction", P, False),
    (
        "pod-failed-no-container",
        job("Failed"),
        pod("Failed", None, reason="UnexpectedAdmissionError"),
        {},
        O.FAILED,
        "UnexpectedAdmissionError",
        F,
        False,
    ),
]


@pytest.mark.parametrize(
    ("job_obj", "pod_obj", "kwargs", "outcome", "reason", "charge", "fatal"),
    [t[1:] for t in TABLE],
    ids=[t[0] for t in TABLE],
)
def test_classify_table(
    job_obj: Any, pod_obj: Any, kwargs: dict[str, Any], outcome: O, reason: str, charge: Charge, fatal: bool
) -> None:
    got = classify_attempt(job_obj, pod_obj, **kwargs)
    assert got is not None
    assert (got.outcome, got.reason, got.charge, got.fatal) == (outcome, reason, charge, fatal)


@pytest.mark.parametrize(
    ("job_obj", "pod_obj", "kwargs"),
    [
        (job(), None, {}),  # Job created, pod not there yet
        (job(), pod("Pending"), {}),
        (job(), stopped(pod("Running"), "Suspended"), {}),  # stopped by us, still committing
        (job(), RUNNING, {}),
        (job(), RUNNING, {"node_exists": None}),  # node unknown (no RBAC): keep waiting
        (job(), pod("Running", deleting=True, disruption="PreemptionByScheduler"), {}),  # committing in its grace
        (job(), pod("Running", deleting=True), {}),
        (job("Suspended", "JobSuspended", suspend=True), None, {}),  # queued by Kueue, never admitted
    ],
    ids=[
        "no-pod-yet",
        "pending",
        "stopped-by-us-still-committing",
        "running",
        "node-unknown",
        "preempting-in-grace",
        "deleting-in-grace",
        "kueue-queued",
    ],
)
def test_attempt_not_ended(job_obj: Any, pod_obj: Any, kwargs: dict[str, Any]) -> None:
    assert classify_attempt(job_obj, pod_obj, **kwargs) is None


def test_termination_report_parsed_defensively() -> None:
    report = {"exitCode": 1, "reason": "StepFailed", "message": "ValueError: boom", "attempt": 2, "step": "crop"}
    got = classify_attempt(job("Failed"), pod("Failed", 1, message="log line\n" + json.dumps(report)))
    assert got is not None and got.report == report and got.message == "ValueError: boom"
    plain = classify_attempt(job("Failed"), pod("Failed", 1, message="Traceback: plain text"))
    assert plain is not None and plain.report is None and "plain text" in plain.message


def test_api_errors_are_sorted_in_one_place() -> None:
    from respawn_operator.kube import ApiError, ErrorKind, sort_api_error

    cases = {
        (404, "NotFound"): ErrorKind.NOT_FOUND,
        (409, "AlreadyExists"): ErrorKind.ALREADY_EXISTS,
        (409, "Conflict"): ErrorKind.CONFLICT,
        (422, "Invalid"): ErrorKind.INVALID,
        (400, "BadRequest"): ErrorKind.INVALID,
        (403, "Forbidden"): ErrorKind.FORBIDDEN,
        (429, "TooManyRequests"): ErrorKind.TRANSIENT,
        (500, "InternalError"): ErrorKind.TRANSIENT,
        (0, "ClientConnectorError"): ErrorKind.TRANSIENT,
    }
    for (code, reason), kind in cases.items():
        assert sort_api_error(ApiError(code, reason, "x"))[0] is kind, (code, reason)
    assert sort_api_error(ApiError(429, "TooManyRequests", "x", retry_after=7))[1] == 7
    assert sort_api_error(TimeoutError())[0] is ErrorKind.TRANSIENT

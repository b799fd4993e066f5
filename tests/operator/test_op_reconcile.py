"""decide() is the reconciler's brain; these walk it through runs without any server."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import Any

import pytest
from respawn_operator.config import OperatorConfig
from respawn_operator.reconcile import Decision, Observed, decide
from respawn_operator.spec import Phase

CONFIG = OperatorConfig(default_checkpoint_uri="file:///ckpt")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def new_run(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "respawn.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
        "spec": {"pipeline": "dataprep", **spec},
    }


def apply(body: dict[str, Any], d: Decision) -> dict[str, Any]:
    """What the API would hold after the status patch."""
    return {**body, "status": d.status.model_dump(by_alias=True, mode="json", exclude_none=True)}


def pod(
    phase: str,
    exit_code: int | None = None,
    progress: dict[str, Any] | None = None,
    disruption: str | None = None,
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if exit_code is not None:
        term: dict[str, Any] = {"exitCode": exit_code}
        if message:
            term["message"] = json.dumps(message)
        status["containerStatuses"] = [{"name": "pipeline", "state": {"terminated": term}}]
    if disruption:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    ann = {"respawn.dev/progress": json.dumps(progress)} if progress else {}
    return {"metadata": {"name": "r-a1-abc", "annotations": ann}, "spec": {"nodeName": "n1"}, "status": status}


JOB: dict[str, Any] = {"status": {}}


def step(body: dict[str, Any], obs: Observed, at: float = 0) -> tuple[dict[str, Any], Decision]:
    d = decide(body, obs, T0 + dt.timedelta(seconds=at), CONFIG)
    return apply(body, d), d


def cond(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def test_first_attempt_then_progress_then_success() -> None:
    body, d = step(new_run(), Observed())
    assert d.create_job is not None and d.create_job["metadata"]["name"] == "r-a1"
    assert body["status"]["phase"] == "Pending" and body["status"]["attempt"] == 1
    progress = {
        "attempt": 1,
        "currentStep": "crop",
        "completedSteps": 2,
        "totalSteps": 5,
        "lastCheckpoint": {"step": "detect", "seq": 2, "at": "2026-01-01T00:00:01Z"},
    }
    body, d = step(body, Observed(job=JOB, pod=pod("Running", progress=progress), node_exists=True))
    st = body["status"]
    assert (st["phase"], st["currentStep"], st["progress"]) == ("Running", "crop", "2/5")
    assert cond(body, "Ready")["status"] == "True" and cond(body, "Checkpointed")["status"] == "True"
    assert [e.reason for e in d.events] == ["Checkpointed"]
    again, d2 = step(body, Observed(job=JOB, pod=pod("Running", progress=progress), node_exists=True), at=5)
    assert again["status"] == body["status"] and d2.events == [] and d2.create_job is None  # idempotent
    body, d = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert body["status"]["phase"] == "Succeeded" and cond(body, "Succeeded")["status"] == "True"
    assert body["status"]["attempts"][0]["outcome"] == "Succeeded"


def test_checkpoint_events_say_what_was_committed_never_a_step_none() -> None:
    body, _ = step(new_run(), Observed())
    messages = []
    checkpoints: list[dict[str, Any]] = [
        {"step": None, "kind": "claim"},  # the attempt's claim: no event
        {"step": "detect", "kind": "step"},
        {"step": "detect", "kind": "progress", "inStep": "crop"},  # labelled by its own step
    ]
    for seq, last in enumerate(checkpoints, start=1):
        report = {"attempt": 1, "currentStep": "crop", "lastCheckpoint": {**last, "seq": seq}}
        body, d = step(body, Observed(job=JOB, pod=pod("Running", progress=report), node_exists=True), at=seq)
        messages += [e.message for e in d.events if e.reason == "Checkpointed"]
    assert messages == ["attempt 1 committed step detect (seq 2)", "attempt 1 saved progress in step crop (seq 3)"]


def test_preemption_starts_next_attempt_at_once_resuming() -> None:
    body, _ = step(new_run(), Observed())
    progress = {
        "attempt": 1,
        "currentStep": "crop",
        "completedSteps": 2,
        "totalSteps": 5,
        "lastCheckpoint": {"step": "detect", "seq": 2},
    }
    body, _ = step(body, Observed(job=JOB, pod=pod("Running", progress=progress), node_exists=True))
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143, disruption="PreemptionByScheduler")))
    st = body["status"]
    assert st["preemptions"] == 1 and st["attempt"] == 2 and st["phase"] == "Retrying"
    assert st["attempts"][0]["outcome"] == "Preempted" and st["attempts"][0]["reason"] == "PreemptionByScheduler"
    assert st["attempts"][1]["resumedFrom"] == "detect"
    assert d.create_job is not None and d.create_job["metadata"]["name"] == "r-a2"
    env = {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESPAWN_ATTEMPT"] == "2" and env["RESPAWN_RESUME"] == "true"
    assert {e.reason for e in d.events} == {"Preempted", "AttemptStarted", "Resumed"}


def test_failures_back_off_then_exhaust_max_failures() -> None:
    body, _ = step(new_run(budgets={"maxFailures": 1, "backoff": {"initialSeconds": 10, "maxSeconds": 60}}), Observed())
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 1)), at=1)
    assert body["status"]["phase"] == "Retrying" and d.create_job is None and d.requeue_after == 10
    body, d = step(body, Observed(), at=5)
    assert d.create_job is None and body["status"]["phase"] == "Retrying"
    body, d = step(body, Observed(), at=11)
    assert d.create_job is not None and body["status"]["attempt"] == 2
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 1)), at=12)
    st = body["status"]
    assert st["phase"] == "Failed" and "maxFailures=1" in st["message"]
    assert cond(body, "Succeeded")["reason"] == "MaxFailuresExceeded"


def test_invalid_input_fails_at_once() -> None:
    body, _ = step(new_run(), Observed())
    report = {"exitCode": 64, "reason": "InvalidInput", "message": "crop_size: must be > 0"}
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 64, message=report)))
    assert body["status"]["phase"] == "Failed" and "crop_size" in body["status"]["message"]
    assert d.create_job is None


def test_invalid_spec_fails_with_message() -> None:
    body, d = step(new_run(budgets={"backoff": {"initialSeconds": 100, "maxSeconds": 1}}), Observed())
    assert body["status"]["phase"] == "Failed" and "maxSeconds" in body["status"]["message"]
    assert d.create_job is None and cond(body, "Succeeded")["reason"] == "InvalidSpec"


def test_suspend_stops_gracefully_then_resumes() -> None:
    body, _ = step(new_run(), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    body["spec"]["suspend"] = True
    body["metadata"]["generation"] = 2
    body, d = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    assert [s.job for s in d.stops] == ["r-a1"] and d.stops[0].grace_seconds is None
    assert body["status"]["phase"] == "Running" and cond(body, "Suspended")["reason"] == "Suspending"
    body, d = step(body, Observed(job=None, pod=pod("Failed", 143)))
    st = body["status"]
    assert st["phase"] == "Suspended" and st["preemptions"] == 0
    assert st["attempts"][0]["outcome"] == "Stopped" and st["attempts"][0]["reason"] == "Suspended"
    assert cond(body, "Suspended")["status"] == "True" and cond(body, "Suspended")["observedGeneration"] == 2
    body["spec"]["suspend"] = False
    body, d = step(body, Observed())
    assert d.create_job is not None and body["status"]["attempt"] == 2


def stopped_pod(reason: str, exit_code: int = 143, running: bool = False) -> dict[str, Any]:
    """An attempt pod the operator stopped itself: annotated, Failed/DeadlineExceeded (kept)."""
    p = pod("Failed", exit_code)
    p["metadata"]["annotations"]["respawn.dev/stopped"] = reason
    p["status"]["reason"] = "DeadlineExceeded"
    if running:  # kubelet reported the phase while it still stops the container
        p["status"]["containerStatuses"] = [{"name": "pipeline", "state": {"running": {}}}]
    return p


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"suspend": True}, "Suspended"),
        ({"rerunFrom": "crop"}, "RerunRequested"),
        ({"params": {"x": 2}}, "SpecChanged"),
    ],
)
def test_own_stops_keep_the_pod_and_are_not_charged(edit: dict[str, Any], reason: str) -> None:
    """Suspend, re-run and a spec change stop the attempt gracefully (the Job and pod stay) and
    wait until the pod's container has ended; the kept pod, Failed/DeadlineExceeded, is recorded
    Stopped with no budget charged, not as the pipeline's failure nor as the run's deadline."""
    body, _ = step(new_run(params={"x": 1}), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    body["spec"].update(edit)
    body["metadata"]["generation"] = 2
    body, d = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    assert [(s.job, s.grace_seconds, s.reason) for s in d.stops] == [("r-a1", None, reason)]
    assert d.prune_jobs == []
    # Failed already, but its container still stops: wait (fencing: nothing starts yet).
    body, d = step(body, Observed(job=JOB, pod=stopped_pod(reason, running=True), node_exists=True))
    assert d.create_job is None and d.stops == [] and "outcome" not in body["status"]["attempts"][0]
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    body, d = step(body, Observed(job=failed_job, pod=stopped_pod(reason), node_exists=True))
    st = body["status"]
    assert (st["attempts"][0]["outcome"], st["attempts"][0]["reason"]) == ("Stopped", reason)
    assert st["preemptions"] == 0 and st["failures"] == 0 and st["phase"] != "Failed"
    assert d.stops == []  # the kept pod is not deleted
    if reason == "Suspended":
        assert st["phase"] == "Suspended" and d.create_job is None
    else:
        assert d.create_job is not None and st["attempt"] == 2


def test_a_stopped_pod_is_stopped_even_without_the_stopping_record() -> None:
    """classify reads the operator's annotation: a status that lost `stopping` still says Stopped."""
    body, _ = step(new_run(), Observed())
    body, d = step(body, Observed(job=JOB, pod=stopped_pod("Suspended"), node_exists=True))
    rec = body["status"]["attempts"][0]
    assert (rec["outcome"], rec["reason"]) == ("Stopped", "Suspended") and body["status"]["preemptions"] == 0


def test_pod_deadline_exceeded_without_our_annotation_is_the_run_deadline() -> None:
    body, _ = step(new_run(activeDeadlineSeconds=100), Observed())
    p = pod("Failed", 143)
    p["status"]["reason"] = "DeadlineExceeded"
    body, d = step(body, Observed(job=JOB, pod=p, node_exists=True), at=100)
    assert body["status"]["phase"] == "Failed" and cond(body, "Succeeded")["reason"] == "DeadlineExceeded"
    assert d.stops == [] and d.create_job is None  # the pod (and its log) stays


def test_only_the_last_kept_attempts_jobs_stay() -> None:
    """Each new attempt deletes the Job of the attempt `kept_attempts` back (its pod goes with it)."""
    config = OperatorConfig(default_checkpoint_uri="file:///ckpt", kept_attempts=3)
    body = new_run(budgets={"maxPreemptions": 20})
    pruned: list[str] = []
    for n in range(1, 7):
        d = decide(body, Observed() if n == 1 else Observed(job=JOB, pod=pod("Failed", 143)), T0, config)
        body = apply(body, d)
        assert d.create_job is not None and d.create_job["metadata"]["name"] == f"r-a{n}"
        pruned += d.prune_jobs
    assert pruned == ["r-a1", "r-a2", "r-a3"]  # r-a4, r-a5, r-a6 remain
    assert OperatorConfig.from_env({"RESPAWN_KEPT_ATTEMPTS": "0"}).kept_attempts == 1
    assert OperatorConfig.from_env({}).kept_attempts == 5


def test_forced_stop_of_a_lost_node_still_deletes() -> None:
    body, _ = step(new_run(), Observed())
    running = pod("Running")
    body, d = step(body, Observed(job=JOB, pod=running, node_exists=False))
    assert [(s.job, s.grace_seconds) for s in d.stops] == [("r-a1", 0)]


def test_rerun_from_on_finished_run_starts_one_new_attempt() -> None:
    body, _ = step(new_run(), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    body["spec"]["rerunFrom"] = "crop"
    body["metadata"]["generation"] = 2
    body, d = step(body, Observed())
    assert d.create_job is not None
    env = {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESPAWN_RERUN_FROM"] == "crop"
    assert body["status"]["rerun"] == {"step": "crop", "generation": 2, "attempt": 2}
    body, d = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert body["status"]["phase"] == "Succeeded"
    body["metadata"]["generation"] = 3  # another edit: the same rerunFrom must not run again
    body, d = step(body, Observed())
    assert d.create_job is None and body["status"]["phase"] == "Succeeded"


def env_of(d: Decision) -> dict[str, Any]:
    assert d.create_job is not None
    return {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_rerun_from_in_the_creating_manifest_is_checked_by_the_first_attempt() -> None:
    body, d = step(new_run(rerunFrom="zzz"), Observed())
    assert env_of(d)["RESPAWN_RERUN_FROM"] == "zzz"  # the runtime checks the step name
    st = body["status"]
    assert st["rerun"] == {"step": "zzz", "generation": 1, "attempt": 1}
    assert st["attempts"][0]["rerunFrom"] == "zzz" and st["phase"] == "Pending"
    assert [e.reason for e in d.events] == ["AttemptStarted"]  # no RerunRequested: nothing ran
    # The runtime does not know the step: exit 64 fails the run with its message.
    term = {"error": "InvalidInput", "message": "rerunFrom: unknown step 'zzz'; steps are a, b"}
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 64, message=term)))
    st = body["status"]
    assert st["phase"] == "Failed" and "rerunFrom: unknown step 'zzz'" in st["message"]
    assert d.create_job is None


def test_rerun_from_in_the_creating_manifest_is_not_repeated_after_a_commit() -> None:
    body, d = step(new_run(rerunFrom="crop"), Observed())
    assert env_of(d)["RESPAWN_RERUN_FROM"] == "crop"
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)))  # lost before any commit
    assert env_of(d)["RESPAWN_RERUN_FROM"] == "crop" and body["status"]["attempt"] == 2
    committed = {"attempt": 2, "lastCheckpoint": {"step": "a", "seq": 1, "attempt": 2}}
    body, _ = step(body, Observed(job=JOB, pod=pod("Running", progress=committed), node_exists=True))
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)))
    assert "RESPAWN_RERUN_FROM" not in env_of(d)  # resumes; the rerun is not asked again
    body["metadata"]["generation"] = 2  # another edit keeping the same rerunFrom
    body, d = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert body["status"]["phase"] == "Succeeded" and body["status"]["preemptions"] == 2
    body, d = step(body, Observed())
    assert d.create_job is None and body["status"]["phase"] == "Succeeded"


def test_node_lost_force_deletes_and_moves_on() -> None:
    body, _ = step(new_run(), Observed())
    body, d = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=False))
    assert d.stops and d.stops[0].grace_seconds == 0
    assert body["status"]["attempts"][0]["reason"] == "NodeLost" and body["status"]["attempt"] == 2


def test_max_preemptions_names_the_budget() -> None:
    body, _ = step(new_run(budgets={"maxPreemptions": 0}), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Failed", 143)))
    assert body["status"]["phase"] == "Failed" and "maxPreemptions=0" in body["status"]["message"]
    assert cond(body, "Succeeded")["reason"] == "MaxPreemptionsExceeded"


def test_stale_attempt_report_is_ignored() -> None:
    body, _ = step(new_run(), Observed())
    old = {"attempt": 7, "currentStep": "late", "completedSteps": 4, "totalSteps": 5}
    body, _ = step(body, Observed(job=JOB, pod=pod("Running", progress=old), node_exists=True))
    assert body["status"].get("currentStep") is None


def test_phase_enum_values() -> None:
    assert [p.value for p in Phase] == ["Pending", "Running", "Retrying", "Suspended", "Succeeded", "Failed"]


def test_rerun_asked_again_until_the_rerun_commits() -> None:
    body, _ = step(new_run(), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Failed", 143)))  # attempt 2 starts
    body, _ = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    body["spec"]["rerunFrom"] = "c"
    body, d = step(body, Observed())
    assert body["status"]["attempt"] == 3 and body["status"]["rerun"]["attempt"] == 3
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)))  # lost before any commit
    assert d.create_job is not None
    env = {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESPAWN_RERUN_FROM"] == "c"
    committed = {"attempt": 4, "lastCheckpoint": {"step": "c", "seq": 9, "attempt": 4}}
    body, _ = step(body, Observed(job=JOB, pod=pod("Running", progress=committed), node_exists=True))
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)))
    assert d.create_job is not None
    env = {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "RESPAWN_RERUN_FROM" not in env  # the discard is committed: later attempts just resume


def test_run_deadline_fails_the_run_between_attempts() -> None:
    body, d = step(new_run(activeDeadlineSeconds=100), Observed())
    assert d.create_job is not None and d.create_job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 100
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)), at=60)
    assert d.create_job is not None and d.create_job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 40
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)), at=101)
    assert body["status"]["phase"] == "Failed" and d.create_job is None
    assert next(c for c in body["status"]["conditions"] if c["type"] == "Succeeded")["reason"] == "DeadlineExceeded"


def test_image_pull_problem_is_shown_while_pending() -> None:
    body, _ = step(new_run(), Observed())
    waiting = pod("Pending")
    waiting["status"]["containerStatuses"] = [
        {"name": "pipeline", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
    ]
    body, _ = step(body, Observed(job=JOB, pod=waiting, node_exists=True))
    assert body["status"]["phase"] == "Pending" and "ImagePullBackOff" in body["status"]["message"]


def test_fixing_an_invalid_spec_lets_the_run_go_on() -> None:
    body, d = step(new_run(env=[{"name": "RESPAWN_ATTEMPT", "value": "1"}]), Observed())
    assert body["status"]["phase"] == "Failed" and "RESPAWN_" in body["status"]["message"]
    body["spec"]["env"] = [{"name": "LOG_LEVEL", "value": "debug"}]
    body["metadata"]["generation"] = 2
    body, d = step(body, Observed())
    assert d.create_job is not None and body["status"]["phase"] == "Pending"
    assert next(c for c in body["status"]["conditions"] if c["type"] == "Succeeded")["status"] == "Unknown"


def test_spot_is_taken_from_node_labels_and_kept_when_the_node_vanishes() -> None:
    body, _ = step(new_run(), Observed())
    body, _ = step(
        body, Observed(job=JOB, pod=pod("Running"), node_exists=True, node_labels={"cloud.google.com/gke-spot": "true"})
    )
    assert body["status"]["attempts"][0]["spot"] is True
    body, _ = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=False, node_labels=None))
    assert body["status"]["attempts"][0]["spot"] is True and body["status"]["attempts"][0]["reason"] == "NodeLost"


def test_rejected_job_fails_the_run_without_a_phantom_attempt() -> None:
    # Quantities pass the schema one by one; the API server still refuses requests above limits.
    body = new_run(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})
    first = decide(body, Observed(), T0, CONFIG)
    assert first.create_job is not None  # the decision the executor tried, and the API refused
    why = (
        'spec.template.spec.containers[0].resources.requests: Invalid value: "2Gi": '
        "must be less than or equal to memory limit of 1Gi"
    )
    d = decide(body, Observed(job_rejected=why), T0, CONFIG)
    st = apply(body, d)["status"]
    assert st["phase"] == "Failed" and st["attempt"] == 0 and st.get("attempts", []) == []
    assert "memory limit" in st["message"] and d.create_job is None
    assert next(c for c in st["conditions"] if c["type"] == "Succeeded")["reason"] == "JobRejected"
    assert [e.reason for e in d.events] == ["JobRejected"]
    # Told of a rejection when it would start nothing, decide is unchanged.
    running = apply(body, first)
    assert decide(running, Observed(job=JOB, job_rejected=why), T0, CONFIG) == decide(
        running, Observed(job=JOB), T0, CONFIG
    )


def test_a_checkpoint_uri_outside_the_namespaces_prefixes_fails_the_run() -> None:
    config = OperatorConfig(
        default_checkpoint_uri="gs://shared/respawn",
        allowed_checkpoint_prefixes=("gs://shared/respawn",),
        namespace_checkpoint_prefixes={"ns": ("gs://team-ns/",)},
    )
    body = new_run(checkpoint={"uri": "gs://team-other/runs"})
    d = decide(body, Observed(), T0, config)
    body = apply(body, d)
    assert d.create_job is None and body["status"]["phase"] == "Failed"
    assert "gs://team-other/runs is not allowed in namespace ns" in body["status"]["message"]
    assert "gs://team-ns/" in body["status"]["message"]
    assert decide(new_run(checkpoint={"uri": "gs://team-ns/runs"}), Observed(), T0, config).create_job is not None
    assert decide(new_run(checkpoint={"uri": "gs://team-nsx/runs"}), Observed(), T0, config).create_job is None
    # A namespace without a list of its own: the global list, which the default URI is in.
    other = {**new_run(), "metadata": {**new_run()["metadata"], "namespace": "elsewhere"}}
    assert decide(other, Observed(), T0, config).create_job is not None


def test_prefix_lists_parse_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "RESPAWN_ALLOWED_CHECKPOINT_PREFIXES": "gs://a/x, file:///ck",
            "RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES": '{"team-a": ["gs://a/team-a"]}',
        }
    )
    assert config.allowed_checkpoint_prefixes == ("gs://a/x", "file:///ck")
    assert config.checkpoint_uri_refusal("team-a", "gs://a/x/run") is not None
    assert config.checkpoint_uri_refusal("team-b", "gs://a/x/run") is None
    with pytest.raises(ValueError, match="lists of URI prefixes"):
        OperatorConfig.from_env({"RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES": '{"team-a": "gs://a"}'})


def test_a_run_that_fails_for_good_under_retain_never_gets_a_retire_job() -> None:
    body, _ = step(new_run(checkpoint={"retain": "Never"}, budgets={"maxFailures": 0}), Observed())
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 1)))
    assert body["status"]["phase"] == "Failed"
    job = d.retire_job
    assert job is not None and job["metadata"]["name"].startswith("r-retire-")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["pipeline-runtime", "cleanup"] and "--purge" not in command  # the tombstone stays
    _, again = step(body, Observed(job=JOB, pod=pod("Failed", 1)))
    assert again.retire_job is None  # once, when the run fails
    kept, d2 = step(new_run(budgets={"maxFailures": 0}), Observed())
    _, d2 = step(kept, Observed(job=JOB, pod=pod("Failed", 1)))
    assert d2.retire_job is None  # OnFailure keeps a failed run's checkpoint


def edit_spec(body: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """What a `kubectl apply` of an edited spec leaves: a new generation."""
    meta = {**body["metadata"], "generation": body["metadata"]["generation"] + 1}
    return {**body, "metadata": meta, "spec": {**body["spec"], **spec}}


def test_a_params_edit_while_running_stops_the_attempt_and_runs_the_new_spec() -> None:
    body, d = step(new_run(params={"crop_size": 224}), Observed())
    assert d.create_job is not None and body["status"]["resultGeneration"] == 1
    body, _ = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    body = edit_spec(body, params={"crop_size": 112})
    body, d = step(body, Observed(job=JOB, pod=pod("Running"), node_exists=True))
    assert [s.attempt for s in d.stops] == [1] and "SpecChanged" in [e.reason for e in d.events]
    body, d = step(body, Observed(job=JOB, pod=pod("Failed", 143)), at=5)  # it stopped after a checkpoint
    assert d.create_job is not None and body["status"]["attempt"] == 2
    env = {e["name"]: e.get("value") for e in d.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESPAWN_PARAMS"] == '{"crop_size":112}'
    assert body["status"]["attempts"][0]["outcome"] == "Stopped" and body["status"]["preemptions"] == 0
    assert body["status"]["resultGeneration"] == 2


def test_a_succeeded_run_runs_again_when_its_params_change_but_not_for_other_edits() -> None:
    body, _ = step(new_run(), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert body["status"]["phase"] == "Succeeded"
    same, d = step(edit_spec(body, budgets={"maxFailures": 9}, checkpoint={"retain": "Always"}), Observed(job=JOB))
    assert d.create_job is None and same["status"]["phase"] == "Succeeded"  # not what the result depends on
    again, d = step(edit_spec(body, params={"crop_size": 64}), Observed(job=JOB))
    assert d.create_job is not None and again["status"]["attempt"] == 2
    assert cond(again, "Succeeded")["status"] == "Unknown"


def test_a_failed_run_is_revived_by_a_fixed_spec_with_fresh_budgets() -> None:
    body, _ = step(new_run(budgets={"maxFailures": 0}), Observed())
    body, _ = step(body, Observed(job=JOB, pod=pod("Failed", 1)))
    assert body["status"]["phase"] == "Failed" and body["status"]["failures"] == 1
    body, d = step(edit_spec(body, image="img:fixed"), Observed(job=JOB))
    assert d.create_job is not None and body["status"]["failures"] == 0 and body["status"]["phase"] == "Retrying"


def test_params_hundreds_of_levels_deep_do_not_break_the_spec_hash() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    _, d = step(new_run(params={"deep": deep}), Observed())  # pydantic's serializer stops at such depths
    assert d.create_job is not None and d.status.spec_hash


def test_an_event_is_built_for_the_run_it_is_about() -> None:
    from respawn_operator.events import MAX_MESSAGE, build_event

    body = new_run()
    ev = build_event(body, "Warning", "JobRejected", "x" * 5000, T0)
    assert ev["involvedObject"]["uid"] == body["metadata"]["uid"] and ev["involvedObject"]["kind"] == "PipelineRun"
    assert ev["metadata"] == {
        "generateName": f"{body['metadata']['name']}.",
        "namespace": body["metadata"]["namespace"],
    }
    assert (ev["type"], ev["reason"], len(ev["message"])) == ("Warning", "JobRejected", MAX_MESSAGE)
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("RESPAWN_RESYNC_SECONDS", "0"),
        ("RESPAWN_RESYNC_SECONDS", "nan"),
        ("RESPAWN_RESYNC_SECONDS", "-5"),
        ("RESPAWN_API_QPS", "fast"),
        ("RESPAWN_API_QPS", "inf"),
        ("RESPAWN_API_BURST", "1.5"),
        ("RESPAWN_METRICS_PORT", "70000"),
        ("RESPAWN_TERMINATION_GRACE_SECONDS", "-1"),
        ("RESPAWN_CLEANUP_TIMEOUT_SECONDS", "0"),
        ("RESPAWN_PEERING_LIFETIME_SECONDS", "x"),
        ("RESPAWN_KEPT_ATTEMPTS", "many"),
    ],
)
def test_a_bad_numeric_setting_is_refused_naming_it(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}='{re.escape(raw)}': must be an? (integer|number) from "):
        OperatorConfig.from_env({name: raw})


def test_good_numeric_settings_are_read() -> None:
    config = OperatorConfig.from_env(
        {
            "RESPAWN_RESYNC_SECONDS": " 2.5 ",
            "RESPAWN_API_QPS": "200",
            "RESPAWN_API_BURST": "400",
            "RESPAWN_METRICS_PORT": "",
        }
    )
    assert (config.resync_seconds, config.api_qps, config.api_burst, config.metrics_port) == (2.5, 200.0, 400, 8080)


def test_the_operator_cli_refuses_a_bad_setting_in_one_line() -> None:
    import subprocess
    import sys

    env = {**os.environ, "RESPAWN_RESYNC_SECONDS": "soon"}
    proc = subprocess.run(
        [sys.executable, "-m", "respawn_operator.cli", "--standalone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 64, proc.stderr
    assert proc.stderr.strip() == "respawn-operator: RESPAWN_RESYNC_SECONDS='soon': must be a number from 0.1 to 86400"

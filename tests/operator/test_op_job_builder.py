"""build_job and friends are pure: checked as plain functions, no server."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from respawn_operator.budgets import exhausted_budget, failure_backoff, remaining_deadline, spot_allowed
from respawn_operator.config import OperatorConfig
from respawn_operator.job_builder import (
    JOB_DEADLINE_SLACK_SECONDS,
    build_cleanup_job,
    build_job,
    job_name,
    short_name,
)
from respawn_operator.spec import Backoff, Budgets, PipelineRunStatus, Run, SpecError, parse_spec

CONFIG = OperatorConfig(default_image="img:1", default_checkpoint_uri="file:///ckpt")
SPOT = {"cloud.google.com/gke-spot": "true", "disk": "ssd"}
SPOT_TOL = [
    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "gpu", "operator": "Exists"},
]


def make_run(name: str = "video-42", preemptions: int = 0, **spec: Any) -> Run:
    raw = {"pipeline": "dataprep", "params": {"crop_size": 224}, **spec}
    return Run(
        name=name,
        namespace="ns1",
        uid="0123abcd-0000-0000-0000-000000000000",
        generation=1,
        spec=parse_spec(raw),
        status=PipelineRunStatus(preemptions=preemptions),
    )


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    ct = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in ct["env"]}


def test_job_is_one_pod_never_replaced_owned_by_the_run() -> None:
    job = build_job(make_run(), 3, CONFIG)
    assert job["metadata"]["name"] == "video-42-a3"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["containers"][0]["command"] == ["pipeline-runtime", "run"]
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "PipelineRun" and owner["controller"] is True and owner["uid"].startswith("0123")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["respawn.dev/attempt"] == "3" and labels["respawn.dev/run"] == "video-42"


def test_env_contract() -> None:
    run = make_run(
        tenant="t1",
        checkpoint={"retain": "Never", "resume": "Strict", "progressIntervalSeconds": 2.5},
        env=[{"name": "LOG_LEVEL", "value": "debug"}],
    )
    env = env_of(build_job(run, 4, CONFIG, rerun_from="crop"))
    assert env["RESPAWN_PIPELINE"] == "dataprep"
    assert env["RESPAWN_PARAMS"] == '{"crop_size":224}'
    assert env["RESPAWN_RUN_ID"] == "ns1-video-42-0123abcd"
    assert env["RESPAWN_CHECKPOINT_URI"] == "file:///ckpt"
    assert env["RESPAWN_RESUME"] == "true"
    assert env["RESPAWN_RESUME_POLICY"] == "Strict"
    assert env["RESPAWN_ATTEMPT"] == "4"
    assert env["RESPAWN_RETAIN"] == "Never"
    assert env["RESPAWN_TENANT"] == "t1"
    assert env["RESPAWN_RERUN_FROM"] == "crop"
    assert env["RESPAWN_PROGRESS_INTERVAL_SECONDS"] == "2.5"
    assert env_of(build_job(make_run(), 1, CONFIG))["RESPAWN_PROGRESS_INTERVAL_SECONDS"] == "5"  # the default
    assert env["RESPAWN_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["LOG_LEVEL"] == "debug"
    assert "RESPAWN_RERUN_FROM" not in env_of(build_job(run, 5, CONFIG))


def test_long_names_are_shortened_deterministically() -> None:
    long = "x" * 120
    a, b = job_name(long, 7), job_name(long, 7)
    assert a == b and len(a) <= 63 and a.endswith("-a7")
    assert job_name(long + "y", 7) != a
    assert short_name("abc") == "abc"
    job = build_job(make_run(name=long), 1, CONFIG)
    assert len(job["spec"]["template"]["metadata"]["labels"]["respawn.dev/run"]) <= 63
    assert job["metadata"]["annotations"]["respawn.dev/run-name"] == long


def test_pod_settings_pass_through() -> None:
    run = make_run(
        serviceAccountName="runner",
        resources={"limits": {"memory": "1Gi"}},
        nodeSelector=SPOT,
        tolerations=SPOT_TOL,
        terminationGracePeriodSeconds=20,
        activeDeadlineSeconds=100,
        podTemplate={
            "metadata": {"labels": {"team": "a"}},
            "spec": {"priorityClassName": "low", "containers": [{"name": "pipeline", "workingDir": "/w"}]},
        },
    )
    job = build_job(run, 1, CONFIG, active_deadline_seconds=90)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner"
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert pod["containers"][0]["workingDir"] == "/w" and pod["containers"][0]["image"] == "img:1"
    assert pod["priorityClassName"] == "low" and pod["terminationGracePeriodSeconds"] == 20
    assert pod["nodeSelector"] == SPOT and pod["tolerations"] == SPOT_TOL
    # The run's deadline goes on the pod (kubelet stops it and keeps it); the Job's is a later backstop.
    assert pod["activeDeadlineSeconds"] == 90
    assert job["spec"]["activeDeadlineSeconds"] == 90 + 20 + JOB_DEADLINE_SLACK_SECONDS
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "a"


def test_spot_selectors_dropped_after_on_demand_threshold() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]}
                ]
            }
        }
    }
    spec: dict[str, Any] = {
        "nodeSelector": SPOT,
        "tolerations": SPOT_TOL,
        "affinity": affinity,
        "onDemandAfterPreemptions": 2,
    }
    before = build_job(make_run(preemptions=1, **spec), 2, CONFIG)["spec"]["template"]["spec"]
    assert before["nodeSelector"] == SPOT and before["affinity"] == affinity
    after = build_job(make_run(preemptions=2, **spec), 3, CONFIG)["spec"]["template"]["spec"]
    assert after["nodeSelector"] == {"disk": "ssd"}
    assert after["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert "affinity" not in after


def test_cleanup_job_runs_under_the_runs_service_account() -> None:
    run = make_run(serviceAccountName="runner", tenant="t1")
    job = build_cleanup_job(run, CONFIG, purge=True)
    assert job is not None
    ct = job["spec"]["template"]["spec"]["containers"][0]
    assert ct["command"] == [
        "pipeline-runtime",
        "cleanup",
        "file:///ckpt",
        "--run-id",
        "ns1-video-42-0123abcd",
        "--tenant",
        "t1",
        "--purge",
    ]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "runner"
    assert "ownerReferences" not in job["metadata"]
    assert build_cleanup_job(run, OperatorConfig(), purge=True) is None


def test_budgets_and_backoff() -> None:
    b = Budgets(max_preemptions=2, max_failures=1)
    assert exhausted_budget(b, 2, 1) is None
    assert "maxFailures=1" in (exhausted_budget(b, 0, 2) or "")
    assert "maxPreemptions=2" in (exhausted_budget(b, 3, 0) or "")
    back = Backoff(initial_seconds=10, max_seconds=60)
    assert [failure_backoff(back, n) for n in range(6)] == [0, 10, 20, 40, 60, 60]
    assert spot_allowed(None, 99) and spot_allowed(3, 2) and not spot_allowed(3, 3)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert remaining_deadline(None, t0, t0) is None
    assert remaining_deadline(100, t0, t0 + dt.timedelta(seconds=30)) == 70
    assert remaining_deadline(100, t0, t0 + dt.timedelta(seconds=130)) == 0


def test_kueue_queue_label_goes_on_the_job() -> None:
    run = make_run(podTemplate={"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "batch", "team": "a"}}})
    job = build_job(run, 1, CONFIG)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "batch"
    assert "team" not in job["metadata"]["labels"]


def pipeline_container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert containers[0]["name"] == "pipeline"  # first, whatever the podTemplate lists
    return containers[0]  # type: ignore[no-any-return]


def test_pod_template_merges_by_kubernetes_keys_and_keeps_the_operators_env() -> None:
    run = make_run(
        tolerations=[{"key": "spot", "operator": "Exists"}],
        podTemplate={
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "proxy:1"},
                    {
                        "name": "pipeline",
                        "env": [{"name": "HTTP_PROXY", "value": "http://127.0.0.1:3128"}],
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    },
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
            }
        },
    )
    job = build_job(run, 2, CONFIG)
    ct = pipeline_container(job)
    env = env_of(job)
    assert env["RESPAWN_RUN_ID"] == "ns1-video-42-0123abcd" and env["RESPAWN_ATTEMPT"] == "2"
    assert env["HTTP_PROXY"] == "http://127.0.0.1:3128"
    assert ct["command"] == ["pipeline-runtime", "run"] and ct["volumeMounts"] == [
        {"name": "cache", "mountPath": "/cache"}
    ]
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["pipeline", "sidecar"]
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}, {"key": "gpu", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (
            {"containers": [{"name": "pipeline", "env": [{"name": "RESPAWN_RUN_ID", "value": "team-a-victim-1234"}]}]},
            "RESPAWN_RUN_ID",
        ),
        (
            {"containers": [{"env": [{"name": "RESPAWN_CHECKPOINT_URI", "value": "gs://other"}]}]},
            "RESPAWN_CHECKPOINT_URI",
        ),
        ({"containers": [{"name": "sidecar", "env": [{"name": "RESPAWN_ATTEMPT", "value": "99"}]}]}, "RESPAWN_ATTEMPT"),
        ({"containers": [{"name": "pipeline", "command": ["sh", "-c", "exit 0"]}]}, "command"),
        ({"containers": [{"name": "pipeline", "args": ["--run-id", "x"]}]}, "args"),
        ({"containers": [{"name": "pipeline", "terminationMessagePath": "/tmp/fake"}]}, "terminationMessagePath"),
        ({"containers": {"name": "pipeline"}}, "must be a list"),
        ({"containers": [{"name": "pipeline", "env": [{"value": "no name"}]}]}, "EnvVar"),
    ],
)
def test_pod_template_cannot_override_what_the_operator_owns(template: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError, match=says):
        parse_spec({"pipeline": "dataprep", "podTemplate": {"spec": template}})


def test_run_id_comes_from_immutable_facts_never_from_status() -> None:
    run = make_run()
    hijacked = dataclasses.replace(run, status=PipelineRunStatus.model_validate({"runId": "team-a-victim-0123abcd"}))
    assert hijacked.run_id == run.run_id == "ns1-video-42-0123abcd"
    cleanup = build_cleanup_job(hijacked, CONFIG, purge=True)
    assert (
        cleanup is not None
        and "team-a-victim-0123abcd" not in cleanup["spec"]["template"]["spec"]["containers"][0]["command"]
    )


def test_long_names_give_run_ids_that_the_runtime_accepts() -> None:
    from pipeline_runtime.checkpoint import check_name

    for name in ("a" * 230, "b" * 253):
        rid = make_run(name=name).run_id
        assert len(rid) <= 200 and check_name("run id", rid) == rid
        assert rid == make_run(name=name).run_id  # stable
    assert make_run(name="a" * 230).run_id != make_run(name="a" * 231).run_id

"""End to end: the real operator (a `respawn-operator` subprocess, kopf inside) against the
Kubernetes API emulator, with the pod simulator running real `pipeline-runtime` processes
that keep file:// checkpoints in a temp dir.

One cluster per module (the emulator, the simulator and the operator start once);
each test uses its own PipelineRun names. Waits poll the API with deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from respawn_local.apiserver import ApiError, ApiServerThread
from respawn_local.podsim import PodSim
from respawn_local.testkit import free_port, wait_for

from tests.operator.harness import BIN, HERE, NS, ROOT, Cluster, Obj, running_cluster

pytestmark = pytest.mark.slow  # end to end: the operator, the API emulator and pods that run pipeline-runtime


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("op-e2e"), RESPAWN_METRICS_PORT=str(free_port())) as c:
        yield c


def outcomes(st: Obj) -> list[tuple[str, str]]:
    return [(a.get("outcome"), a.get("reason")) for a in st.get("attempts", [])]


def test_run_preempted_twice_still_finishes_with_right_output(cluster: Cluster) -> None:
    cluster.submit("twice", {"step_s": 0.5})
    cluster.wait_status("twice", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.sim.preempt(cluster.running_pod("twice", 1), NS, reason="TerminationByKubelet", grace=10)
    cluster.wait_status(
        "twice", lambda st: st.get("attempt") == 2 and (st.get("completedSteps") or 0) >= 3, "attempt 2 past step c"
    )
    cluster.sim.preempt(cluster.running_pod("twice", 2), NS, reason="PreemptionByScheduler", grace=10)
    st = cluster.wait_phase("twice", "Succeeded")
    assert st["preemptions"] == 2 and st["failures"] == 0
    assert outcomes(st) == [
        ("Preempted", "TerminationByKubelet"),
        ("Preempted", "PreemptionByScheduler"),
        ("Succeeded", "Succeeded"),
    ]
    assert st["attempts"][1]["resumedFrom"] and st["attempts"][2]["resumedFrom"]
    assert (cluster.tmp / "twice.out").read_text() == "a,b,c,d,e 11111\n"
    ran = cluster.executions("twice")
    assert [s for s, _ in ran].count("a") == 1, ran  # committed steps never run again
    assert {a for _, a in ran} == {1, 2, 3}
    assert cluster.jobs("twice") == ["twice-a1", "twice-a2", "twice-a3"]
    assert {"AttemptStarted", "Preempted", "Checkpointed", "Succeeded"} <= set(cluster.events("twice"))
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Succeeded"]["status"] == "True" and cond["Checkpointed"]["status"] == "True"
    metrics = scrape(cluster.metrics_port)
    assert 'respawn_preemptions_total{reason="TerminationByKubelet"} 1.0' in metrics
    assert 'respawn_preemptions_total{reason="PreemptionByScheduler"} 1.0' in metrics
    assert "respawn_reconcile_duration_seconds_count" in metrics and "respawn_attempt_duration_seconds" in metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def test_pipeline_that_raises_fails_when_max_failures_is_spent(cluster: Cluster) -> None:
    cluster.submit(
        "broken",
        {"step_s": 0.05, "fail_in": "b"},
        budgets={"maxFailures": 1, "backoff": {"initialSeconds": 1, "maxSeconds": 1}},
    )
    st = cluster.wait_phase("broken", "Failed")
    assert st["failures"] == 2 and st["preemptions"] == 0
    assert "maxFailures=1" in st["message"]
    assert outcomes(st) == [("Failed", "StepFailed"), ("Failed", "StepFailed")]
    assert "broken on purpose" in (st["attempts"][0].get("message") or "")
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Succeeded"]["status"] == "False" and cond["Succeeded"]["reason"] == "MaxFailuresExceeded"


def assert_kept_stopped_attempt(cluster: Cluster, name: str, attempt: int, why: str, ran: bool = True) -> Obj:
    """The attempt the operator stopped itself kept its Job and its pod: Failed with reason
    DeadlineExceeded (kubelet stopped it), annotated with why, and its log still readable."""
    assert cluster.api.get_or_none("jobs", f"{name}-a{attempt}", NS) is not None
    pods = cluster.attempt_pods(name, attempt)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "DeadlineExceeded", pod["status"]
    assert pod["metadata"]["annotations"].get("respawn.dev/stopped") == why
    assert pod["spec"]["activeDeadlineSeconds"] == 1
    assert "metadata" in pod and not pod["metadata"].get("deletionTimestamp")
    log = cluster.pod_log(pod["metadata"]["name"])
    assert "pipeline-runtime: Terminated: SIGTERM" in log, log  # its own lines, to its stop
    assert not ran or f'"attempt": {attempt}' in log, log
    return pod


def test_suspend_stops_after_a_checkpoint_and_unsuspend_resumes(cluster: Cluster) -> None:
    cluster.submit("pause", {"step_s": 0.6})
    cluster.wait_status("pause", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.patch_spec("pause", {"suspend": True})
    st = cluster.wait_phase("pause", "Suspended")
    uid = cluster.run("pause")["metadata"]["uid"]
    live = [
        p
        for p in cluster.api.list("pods", NS, label_selector=f"respawn.dev/run-uid={uid}")
        if p["status"].get("phase") in ("Pending", "Running")
    ]
    assert live == []
    assert outcomes(st) == [("Stopped", "Suspended")] and st["preemptions"] == 0
    assert {c["type"]: c["status"] for c in st["conditions"]}["Suspended"] == "True"
    # `kubectl logs` of the suspended attempt still works: its Job and pod were kept.
    pod = assert_kept_stopped_attempt(cluster, "pause", 1, "Suspended")
    term = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "pipeline")["state"]["terminated"]
    assert term["exitCode"] == 143  # SIGTERM: the runtime committed and stopped, no SIGKILL
    cluster.patch_spec("pause", {"suspend": False})
    st = cluster.wait_phase("pause", "Succeeded")
    assert st["attempt"] == 2 and st["attempts"][1]["resumedFrom"]
    assert [s for s, _ in cluster.executions("pause")].count("a") == 1
    assert (cluster.tmp / "pause.out").read_text() == "a,b,c,d,e 11111\n"


def test_rerun_from_runs_that_step_and_later_ones_again(cluster: Cluster) -> None:
    # retain: Always keeps the finished run's commits, so the re-run can reuse a..c.
    cluster.submit("again", {"step_s": 0.05}, checkpoint={"retain": "Always"})
    cluster.wait_phase("again", "Succeeded")
    cluster.patch_spec("again", {"rerunFrom": "d"})
    st = cluster.wait_status(
        "again", lambda st: st.get("attempt") == 2 and st.get("phase") == "Succeeded", "the re-run to succeed"
    )
    assert st["rerun"]["step"] == "d" and st["attempts"][1]["rerunFrom"] == "d"
    ran = [s for s, _ in cluster.executions("again")]
    assert (ran.count("a"), ran.count("c"), ran.count("d"), ran.count("e")) == (1, 1, 2, 2)
    # Another edit keeps rerunFrom: no third run.
    cluster.patch_spec("again", {"budgets": {"maxFailures": 5}})
    cluster.wait_status(
        "again",
        lambda st: st.get("observedGeneration") == cluster.run("again")["metadata"]["generation"],
        "the edit to be observed",
    )
    assert cluster.status("again")["attempt"] == 2


def test_schema_rejects_malformed_spec_at_apply_time(cluster: Cluster) -> None:
    with pytest.raises(ApiError) as err:
        cluster.submit("bad-schema", budgets={"maxFailures": -1})
    assert err.value.code == 422
    with pytest.raises(ApiError):
        cluster.submit("bad-retain", checkpoint={"retain": "Sometimes"})


def test_spec_the_schema_cannot_judge_fails_with_a_message(cluster: Cluster) -> None:
    cluster.submit("bad-backoff", budgets={"backoff": {"initialSeconds": 60, "maxSeconds": 5}})
    st = cluster.wait_phase("bad-backoff", "Failed", timeout=20)
    assert "maxSeconds" in st["message"] and st.get("attempt", 0) == 0
    assert cluster.jobs("bad-backoff") == []


def test_invalid_params_fail_at_once(cluster: Cluster) -> None:
    cluster.submit("bad-params", {"step_s": "slow"})
    st = cluster.wait_phase("bad-params", "Failed")
    assert outcomes(st) == [("Failed", "InvalidInput")] and st["failures"] == 0


def test_operator_killed_mid_run_restarts_without_duplicate_attempts(cluster: Cluster) -> None:
    cluster.submit("restart", {"step_s": 0.5})
    cluster.wait_status("restart", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.op.kill()
    try:
        # While the operator is down, the pod is preempted: nobody reacts yet.
        cluster.sim.preempt(cluster.running_pod("restart", 1), NS, reason="TerminationByKubelet", grace=10)
        assert cluster.status("restart")["attempt"] == 1
    finally:
        cluster.op.start()
    st = cluster.wait_phase("restart", "Succeeded", timeout=90)
    assert outcomes(st) == [("Preempted", "TerminationByKubelet"), ("Succeeded", "Succeeded")]
    assert cluster.jobs("restart") == ["restart-a1", "restart-a2"]
    assert (cluster.tmp / "restart.out").read_text() == "a,b,c,d,e 11111\n"


def test_pod_deleted_by_a_user_counts_as_preemption_and_resumes(cluster: Cluster) -> None:
    cluster.submit("deleted", {"step_s": 0.5})
    cluster.wait_status("deleted", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.sim.delete_pod(cluster.running_pod("deleted", 1), NS)
    st = cluster.wait_phase("deleted", "Succeeded")
    assert st["attempts"][0]["outcome"] == "Preempted"
    assert st["attempts"][0]["reason"] in ("PodDeleted", "Terminated")
    assert st["preemptions"] == 1
    assert [s for s, _ in cluster.executions("deleted")].count("a") == 1


def test_lost_spot_node_with_a_live_process_moves_to_on_demand_and_finishes(cluster: Cluster) -> None:
    from respawn_local.podsim import SimNode

    spot = "cloud.google.com/gke-spot"
    cluster.submit(
        "splitbrain",
        {"step_s": 0.5},
        nodeSelector={spot: "true"},
        tolerations=[{"key": spot, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        onDemandAfterPreemptions=1,
    )
    cluster.wait_status("splitbrain", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    pod = cluster.running_pod("splitbrain", 1)
    node = cluster.api.get("pods", pod, NS)["spec"]["nodeName"]
    cluster.sim.lose_node(node, keep_running=True)  # split brain: the old process goes on
    try:
        st = cluster.wait_phase("splitbrain", "Succeeded", timeout=90)
    finally:
        cluster.sim.add_node(SimNode.spot(node))
    first, second = st["attempts"][0], st["attempts"][-1]
    assert first["outcome"] == "Preempted" and first["spot"] is True
    assert first["reason"] in ("NodeLost", "DeletionByTaintManager", "PodDeleted")
    assert second["node"] == "ondemand-1" and second["spot"] is False  # onDemandAfterPreemptions: 1
    assert (cluster.tmp / "splitbrain.out").read_text() == "a,b,c,d,e 11111\n"


def test_kubectl_get_pipelineruns_shows_the_columns(cluster: Cluster) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    cluster.submit("columns", {"step_s": 0.05})
    cluster.wait_phase("columns", "Succeeded")
    kubectl = ["kubectl", "--kubeconfig", cluster.kubeconfig, "--cache-dir", str(cluster.tmp / "kube-cache")]
    out = subprocess.run([*kubectl, "get", "pruns", "columns"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "ITEMS", "STEP", "CURRENT", "PREEMPTIONS", "FAILURES", "AGE"]
    assert row.split()[:3] == ["columns", "Succeeded", "5/5"]  # ITEMS is blank: only a fan-out parent has items
    cat = subprocess.run([*kubectl, "get", "respawn"], capture_output=True, text=True, timeout=30)
    assert "columns" in cat.stdout, cat.stderr


def test_deleting_a_run_cleans_its_checkpoint_with_a_job(cluster: Cluster) -> None:
    cluster.submit("gone", {"step_s": 0.05})
    st = cluster.wait_phase("gone", "Succeeded")
    run_id = st["runId"]
    ckpt = cluster.tmp / "checkpoints"
    assert any(run_id in str(p) for p in ckpt.rglob("*")), "the run left no checkpoint to clean"
    cluster.api.delete("pipelineruns", "gone", NS)
    wait_for(lambda: cluster.api.get_or_none("pipelineruns", "gone", NS) is None, 60, "the run to be deleted")
    assert not any(run_id in str(p) for p in ckpt.rglob("*") if p.is_file()), "the checkpoint was not purged"


@pytest.mark.parametrize("example", ["minimal-run.yaml", "dataprep-run.yaml"])
def test_example_manifests_run_through_the_operator(cluster: Cluster, example: str) -> None:
    """Each PipelineRun in examples/ runs as written, with local URIs swapped in."""
    from tests.dataprep.synth import make_video

    body = yaml.safe_load((ROOT / "examples" / example).read_text())
    name = body["metadata"]["name"]
    work = cluster.tmp / name
    work.mkdir()
    video = make_video(work / "in.mp4", frames=40, width=320, height=240)
    body["metadata"]["namespace"] = NS
    body["spec"]["params"].update(video_uri=f"file://{video}", output_uri=f"file://{work / 'out'}")
    if "checkpoint" in body["spec"]:
        body["spec"]["checkpoint"]["uri"] = f"file://{work / 'ckpt'}"
    if example == "dataprep-run.yaml":
        # The first attempt starts stopped: a 40-frame run finishes faster than a test can
        # watch its progress, and this one must be preempted while it runs.
        cluster.sim.freeze_starts(lambda pod: pod["metadata"]["name"].startswith(f"{name}-a1-"))
    cluster.api.create(body, namespace=NS)
    if example == "dataprep-run.yaml":  # spot, onDemandAfterPreemptions: 5, ...: preempt it once
        cluster.sim.preempt(cluster.running_pod(name, 1, ready=False), NS, reason="TerminationByKubelet", grace=1)
    st = cluster.wait_phase(name, "Succeeded", timeout=120)
    assert (work / "out" / "manifest.jsonl").exists()
    if example == "dataprep-run.yaml":
        assert st["preemptions"] == 1 and st["attempts"][0]["spot"] is True
        assert [a["outcome"] for a in st["attempts"]] == ["Preempted", "Succeeded"], st["attempts"]


def test_api_errors_are_retried_without_duplicate_attempts(cluster: Cluster) -> None:
    def job_create(r: Any) -> bool:
        return bool(r.method == "POST" and r.path.endswith("/jobs"))

    def status_write(r: Any) -> bool:
        return r.method == "PATCH" and "/pipelineruns/flaky/status" in r.path

    before = cluster.api.faults.injected
    cluster.api.faults.fail_next(2, 500, match=job_create)
    cluster.api.faults.fail_next(2, 503, match=status_write, retry_after=1)
    cluster.submit("flaky", {"step_s": 0.05})
    st = cluster.wait_phase("flaky", "Succeeded")
    assert cluster.jobs("flaky") == ["flaky-a1"] and st["attempt"] == 1
    assert cluster.api.faults.injected - before == 4


def test_job_created_just_before_a_crash_is_adopted(cluster: Cluster) -> None:
    """The operator creates a Job, then dies before writing status: the restart adopts the Job."""
    cluster.op.kill()
    try:
        run = cluster.submit("adopt", {"step_s": 0.05})
        from respawn_operator.config import OperatorConfig
        from respawn_operator.job_builder import build_job
        from respawn_operator.spec import PipelineRunStatus, Run, parse_spec

        config = OperatorConfig.from_env(cluster.op.env)
        view = Run(
            name="adopt",
            namespace=NS,
            uid=run["metadata"]["uid"],
            generation=1,
            spec=parse_spec(run["spec"]),
            status=PipelineRunStatus(),
        )
        cluster.api.create(build_job(view, 1, config), namespace=NS)
    finally:
        cluster.op.start()
    st = cluster.wait_phase("adopt", "Succeeded")
    assert cluster.jobs("adopt") == ["adopt-a1"] and st["attempt"] == 1
    assert outcomes(st) == [("Succeeded", "Succeeded")]


def test_deleting_a_running_run_stops_its_pod_and_keeps_a_retained_checkpoint(cluster: Cluster) -> None:
    run = cluster.submit("stopme", {"step_s": 0.5}, checkpoint={"retain": "Always"})
    uid = run["metadata"]["uid"]
    st = cluster.wait_status("stopme", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.api.delete("pipelineruns", "stopme", NS)
    wait_for(lambda: cluster.api.get_or_none("pipelineruns", "stopme", NS) is None, 60, "the run to be deleted")
    pods = cluster.api.list("pods", NS, label_selector=f"respawn.dev/run-uid={uid}")
    assert [p for p in pods if p["status"].get("phase") in ("Pending", "Running")] == []
    assert cluster.api.list("jobs", NS, label_selector=f"respawn.dev/run-uid={uid},respawn.dev/role=cleanup") == []
    assert any(st["runId"] in str(p) for p in (cluster.tmp / "checkpoints").rglob("*") if p.is_file())


def test_operator_serves_only_its_namespaces(tmp_path: Path) -> None:
    """`respawn-operator -n team-a` leaves PipelineRuns elsewhere alone."""
    with ApiServerThread() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        api.create(yaml.safe_load((ROOT / "crds" / "pipelineruns.respawn.dev.yaml").read_text()))
        for ns in ("team-a", "team-b"):
            api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        sim = PodSim.attached(api, work_dir=str(tmp_path / "podsim"))
        sim.start()
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "RESPAWN_METRICS_PORT": "0",
            "RESPAWN_DEFAULT_CHECKPOINT_URI": f"file://{tmp_path / 'checkpoints'}",
        }
        log = open(tmp_path / "operator.log", "wb")
        op = subprocess.Popen(
            [str(BIN / "respawn-operator"), "--standalone", "-n", "team-a"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for ns in ("team-b", "team-a"):
                api.create(
                    {
                        "apiVersion": "respawn.dev/v1alpha1",
                        "kind": "PipelineRun",
                        "metadata": {"name": "r", "namespace": ns},
                        "spec": {
                            "pipeline": "op_pipelines:Steps",
                            "params": {"step_s": 0.01},
                            "env": [{"name": "PYTHONPATH", "value": str(HERE)}],
                        },
                    },
                    namespace=ns,
                )
            wait_for(
                lambda: (api.get("pipelineruns", "r", "team-a").get("status") or {}).get("phase") == "Succeeded",
                60,
                "the team-a run to succeed",
            )
            assert "status" not in api.get("pipelineruns", "r", "team-b")
            assert api.list("jobs", "team-b") == []
        finally:
            op.terminate()
            op.wait(15)
            log.close()
            sim.stop()


def test_a_params_edit_converges_running_and_finished_runs(cluster: Cluster) -> None:
    cluster.submit("edited", {"step_s": 0.5})
    cluster.wait_status("edited", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    cluster.patch_spec("edited", {"params": {"out": str(cluster.tmp / "edited.out"), "step_s": 0.05}})
    st = cluster.wait_status(
        "edited",
        lambda st: st.get("phase") == "Succeeded" and st.get("resultGeneration") == 2,
        "the new spec to finish",
    )
    assert st["attempts"][0]["outcome"] == "Stopped" and st["attempts"][0]["reason"] == "SpecChanged"
    assert st["preemptions"] == 0 and st["failures"] == 0
    assert_kept_stopped_attempt(cluster, "edited", 1, "SpecChanged")
    job = cluster.api.get("jobs", f"edited-a{st['attempt']}", NS)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["RESPAWN_PARAMS"])["step_s"] == 0.05
    # A finished run runs again for a spec it never ran.
    cluster.patch_spec("edited", {"params": {"out": str(cluster.tmp / "edited.out"), "step_s": 0.01}})
    st = cluster.wait_status(
        "edited",
        lambda st: st.get("phase") == "Succeeded" and st.get("resultGeneration") == 3,
        "the third spec to finish",
    )
    assert st["observedGeneration"] == 3 and "SpecChanged" in cluster.events("edited")


def test_the_run_deadline_stops_the_pod_and_keeps_it(cluster: Cluster) -> None:
    """activeDeadlineSeconds is on the pod: kubelet stops it (SIGTERM, the runtime commits)
    and marks it Failed/DeadlineExceeded; the run fails DeadlineExceeded, the pod and its
    log stay."""
    cluster.submit("late", {"step_s": 2.0}, activeDeadlineSeconds=3)
    st = cluster.wait_phase("late", "Failed", timeout=60)
    assert (st["attempts"][0]["outcome"], st["attempts"][0]["reason"]) == ("Failed", "DeadlineExceeded")
    assert next(c for c in st["conditions"] if c["type"] == "Succeeded")["reason"] == "DeadlineExceeded"
    assert st["attempt"] == 1 and cluster.jobs("late") == ["late-a1"]
    pods = cluster.attempt_pods("late", 1)
    assert len(pods) == 1 and pods[0]["status"]["reason"] == "DeadlineExceeded", [p["status"] for p in pods]
    assert pods[0]["status"]["phase"] == "Failed" and "respawn.dev/stopped" not in pods[0]["metadata"]["annotations"]
    assert '"event": "step_start"' in cluster.pod_log(pods[0]["metadata"]["name"])


def test_only_the_last_kept_attempts_jobs_and_pods_remain(cluster: Cluster) -> None:
    """N+2 stops (params edits restart the attempt): the Jobs of the last N attempts stay,
    with their stopped pods and logs; older ones are deleted with their pods."""
    kept = 5  # RESPAWN_KEPT_ATTEMPTS' default
    cluster.submit("many", {"step_s": 3.0})
    for n in range(1, kept + 3):
        cluster.running_pod("many", n)
        cluster.patch_spec("many", {"params": {"out": str(cluster.tmp / "many.out"), "step_s": 3.0 + n}})
        attempt = n + 1  # wait_status polls at once: the lambda never outlives this iteration
        cluster.wait_status("many", lambda st: st.get("attempt") == attempt, f"attempt {attempt} to start")
    last = kept + 3
    want = [f"many-a{a}" for a in range(last - kept + 1, last + 1)]
    wait_for(lambda: sorted(cluster.jobs("many")) == sorted(want), 30, f"only {want} left")
    wait_for(lambda: not cluster.attempt_pods("many", 1) and not cluster.attempt_pods("many", 3), 30, "old pods gone")
    st = cluster.status("many")
    assert outcomes(st)[: last - 1] == [("Stopped", "SpecChanged")] * (last - 1)
    assert st["preemptions"] == 0 and st["failures"] == 0
    for a in range(last - kept + 1, last):
        assert_kept_stopped_attempt(cluster, "many", a, "SpecChanged", ran=False)  # may stop before a step
    cluster.patch_spec("many", {"suspend": True})
    cluster.wait_phase("many", "Suspended")

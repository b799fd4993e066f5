"""The pod simulator: Job controller, scheduler, kubelet with real subprocesses, disruptions."""

from __future__ import annotations

import os
import signal
from typing import Any

from respawn_local.apiserver import ApiServerThread
from respawn_local.podsim import NODE_SHUTDOWN_MESSAGE, SPOT_LABEL, PodSim
from respawn_local.testkit import runner_rbac, wait_for

from .helpers import PY, condition, job_manifest, the_condition

# A container that reports it is running, then waits for SIGTERM and exits 143
# after writing its termination message (what the pipeline runtime does).
TRAP = r"""
import os, signal, sys, time
def stop(signum, frame):
    open(os.environ["RESPAWN_TERMINATION_LOG"], "w").write('{"reason": "sigterm"}')
    print("got SIGTERM", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

# Ignores SIGTERM: only SIGKILL stops it.
STUBBORN = r"""
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

SPOT_TOLERATION = [{"key": SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]


def job_pods(api: ApiServerThread, job: str) -> list[dict[str, Any]]:
    return api.list("pods", "default", label_selector=f"job-name={job}")


def the_pod(api: ApiServerThread, job: str) -> dict[str, Any]:
    pods: list[dict[str, Any]] = wait_for(lambda: job_pods(api, job), 10, f"a pod for job {job}")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def running_pod(api: ApiServerThread, sim: PodSim, job: str) -> dict[str, Any]:
    name = the_pod(api, job)["metadata"]["name"]
    wait_for(lambda: "ready" in sim.log(name), 10, f"{name} to print ready")
    # The kubelet reports Running only after it registered the process.
    running: dict[str, Any] = wait_for(
        lambda: (p := api.get("pods", name))["status"].get("phase") == "Running" and p, 10, f"{name} Running"
    )
    return running


def job_condition(api: ApiServerThread, job: str, ctype: str) -> dict[str, Any] | None:
    cond = condition(api.get("jobs", job), ctype)
    return cond if cond and cond["status"] == "True" else None


def test_job_success_runs_a_real_process(api: ApiServerThread, sim: PodSim) -> None:
    code = (
        "import os; print('pod', os.environ['POD'], os.environ['NS'], os.environ['NODE'], os.environ['GREETING']);"
        "print('api', os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'], os.environ['RESPAWN_POD_NAME']);"
        "open(os.environ['RESPAWN_TERMINATION_LOG'], 'w').write('all done')"
    )
    manifest = job_manifest("ok", code)
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "GREETING", "value": "hello"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    job = api.create(manifest)
    wait_for(lambda: job_condition(api, "ok", "Complete"), 15, "job to complete")
    assert job_condition(api, "ok", "SuccessCriteriaMet")
    status = api.get("jobs", "ok")["status"]
    assert status["succeeded"] == 1 and "failed" not in status and status["startTime"] and status["completionTime"]
    pod = the_pod(api, "ok")
    name = pod["metadata"]["name"]
    assert name.startswith("ok-") and len(name) == len("ok-") + 5
    assert (
        pod["metadata"]["labels"]["job-name"] == "ok"
        and pod["metadata"]["labels"]["controller-uid"] == job["metadata"]["uid"]
    )
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "ok"
    ref = pod["metadata"]["ownerReferences"][0]
    assert (
        ref["kind"] == "Job"
        and ref["uid"] == job["metadata"]["uid"]
        and ref["controller"]
        and ref["blockOwnerDeletion"]
    )
    assert pod["spec"]["nodeName"] == "ondemand-1"  # no spot toleration: not on a spot node
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed" and term["message"] == "all done"
    assert term["startedAt"] and term["finishedAt"]
    log = sim.log(name)
    assert f"pod {name} default ondemand-1 hello" in log and f"api 127.0.0.1 {api.url.rsplit(':', 1)[1]} {name}" in log
    assert pod["metadata"]["annotations"]["respawn.dev/sim-log"].endswith("output.log")

    def reasons(kind: str, obj: str) -> list[str]:
        return [
            e["reason"]
            for e in api.list("events", "default")
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == obj
        ]

    wait_for(lambda: {"Scheduled", "Started"} <= set(reasons("Pod", name)), 5, "pod events")
    wait_for(lambda: {"SuccessfulCreate", "Completed"} <= set(reasons("Job", "ok")), 5, "job events")
    # `kubectl logs` reads the same file through pods/log.
    from .helpers import http

    assert "hello" in http(api, "GET", f"/api/v1/namespaces/default/pods/{name}/log")[1]


def test_job_failure_with_backoff_limit_zero(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("bad", "print('line one'); print('it broke'); raise SystemExit(3)"))
    wait_for(lambda: job_condition(api, "bad", "Failed"), 15, "job to fail")
    failed = job_condition(api, "bad", "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    assert job_condition(api, "bad", "FailureTarget")
    assert api.get("jobs", "bad")["status"]["failed"] == 1
    pod = the_pod(api, "bad")  # exactly one pod: no replacement with backoffLimit 0
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed" and term["exitCode"] == 3 and term["reason"] == "Error"
    assert "it broke" in term["message"]  # FallbackToLogsOnError


def test_backoff_limit_retries_create_new_pods(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("retry", "raise SystemExit(1)", backoff_limit=1))
    wait_for(lambda: job_condition(api, "retry", "Failed"), 15, "job to fail")
    assert len(job_pods(api, "retry")) == 2 and api.get("jobs", "retry")["status"]["failed"] == 2


def test_scheduling_honours_tolerations_and_node_selectors(api: ApiServerThread, sim: PodSim) -> None:
    spot = job_manifest("spot", "pass")
    spot["spec"]["template"]["spec"].update(tolerations=SPOT_TOLERATION, nodeSelector={SPOT_LABEL: "true"})
    nowhere = job_manifest("nowhere", "pass")
    nowhere["spec"]["template"]["spec"]["nodeSelector"] = {SPOT_LABEL: "true"}  # no toleration
    api.create(spot)
    api.create(nowhere)
    wait_for(lambda: job_condition(api, "spot", "Complete"), 15, "spot job")
    assert the_pod(api, "spot")["spec"]["nodeName"] in ("spot-1", "spot-2")
    pod = wait_for(lambda: condition(the_pod(api, "nowhere"), "PodScheduled"), 10, "unschedulable condition")
    assert pod["status"] == "False" and pod["reason"] == "Unschedulable"
    nodes = {n["metadata"]["name"]: n for n in api.list("nodes")}
    assert set(nodes) == {"spot-1", "spot-2", "ondemand-1"}
    assert nodes["spot-1"]["spec"]["taints"][0] == {"key": SPOT_LABEL, "value": "true", "effect": "NoSchedule"}
    assert the_condition(nodes["ondemand-1"], "Ready")["status"] == "True"


def test_preempt_node_shutdown_sigterm_then_failed_like_gke(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("spot", TRAP))
    pod = running_pod(api, sim, "spot")
    name = pod["metadata"]["name"]
    assert pod["status"]["phase"] == "Running" and the_condition(pod, "Ready")["status"] == "True"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    sim.preempt(name, grace=5)
    pod = api.get("pods", name)
    cond = condition(pod, "DisruptionTarget")
    assert (
        cond is not None
        and cond["status"] == "True"
        and cond["reason"] == "TerminationByKubelet"
        and cond["message"] == NODE_SHUTDOWN_MESSAGE
    )
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "Terminated" and pod["status"]["message"] == NODE_SHUTDOWN_MESSAGE
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 143 and term["message"] == '{"reason": "sigterm"}'
    assert "got SIGTERM" in sim.log(name)
    wait_for(lambda: job_condition(api, "spot", "Failed"), 10, "job to fail")
    assert len(job_pods(api, "spot")) == 1


def test_preempt_kills_after_grace_when_sigterm_is_ignored(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("stubborn", STUBBORN))
    name = running_pod(api, sim, "stubborn")["metadata"]["name"]
    sim.preempt(name, grace=0.3)
    term = api.get("pods", name)["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 137 and term["reason"] == "Error"


def test_preemption_by_scheduler_deletes_the_pod(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("victim", TRAP))
    name = running_pod(api, sim, "victim")["metadata"]["name"]
    seen: list[dict[str, Any]] = []
    sim.preempt(name, reason="PreemptionByScheduler", grace=5)
    assert api.get_or_none("pods", name) is None
    assert "got SIGTERM" in sim.log(name)
    # The Job counts the lost pod and, with backoffLimit 0, fails without a new pod.
    wait_for(lambda: job_condition(api, "victim", "Failed"), 10, "job to fail")
    assert job_pods(api, "victim") == seen


def test_evict_goes_through_the_eviction_api(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("evicted", TRAP))
    name = running_pod(api, sim, "evicted")["metadata"]["name"]
    sim.evict(name)
    assert api.get_or_none("pods", name) is None and "got SIGTERM" in sim.log(name)
    assert api.request_counts(agent="respawn-podsim").get(("create", "pods/eviction")) == 1


def test_user_delete_terminates_gracefully(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("deleted", TRAP))
    name = running_pod(api, sim, "deleted")["metadata"]["name"]
    proc = sim.process(name)
    assert proc is not None
    sim.delete_pod(name)
    assert api.get_or_none("pods", name) is None and proc.process.returncode == 143


def test_deleting_the_job_collects_its_pod(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("gc", TRAP))
    name = running_pod(api, sim, "gc")["metadata"]["name"]
    api.delete("jobs", "gc", propagation_policy="Background")
    wait_for(lambda: api.get_or_none("pods", name) is None, 15, "pod to be collected")
    assert "got SIGTERM" in sim.log(name)


def test_lose_node_kills_the_process_and_removes_node_and_pods(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("lost", TRAP))
    pod = running_pod(api, sim, "lost")
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    proc = sim.process(name)
    assert proc is not None
    events = api.call(lambda: len(api.server.history))
    assert sim.lose_node(node) == [name]
    assert api.get_or_none("nodes", node, namespace=None) is None
    assert api.get_or_none("pods", name) is None
    wait_for(lambda: proc.process.returncode is not None, 5, "process to be killed")
    assert proc.process.returncode == -signal.SIGKILL
    # The pod's last state before deletion carried the node-loss condition.
    history = api.call(lambda: [e.obj for e in list(api.server.history)[events:] if e.obj["metadata"]["name"] == name])
    last = history[-1]
    assert the_condition(last, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    assert last["status"]["phase"] == "Failed" and last["status"]["reason"] == "NodeLost"
    wait_for(lambda: job_condition(api, "lost", "Failed"), 10, "job to fail")


def test_lose_node_keep_running_leaves_a_split_brain_process(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("split", TRAP))
    pod = running_pod(api, sim, "split")
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    sim.lose_node(node, keep_running=True)
    assert api.get_or_none("pods", name) is None
    orphan = sim.process(name)
    assert orphan is not None and orphan in sim.orphans and orphan.process.returncode is None
    os.kill(orphan.process.pid, 0)  # still alive
    # No scheduling onto the lost node afterwards.
    after = job_manifest("after", "pass")
    after["spec"]["template"]["spec"]["tolerations"] = SPOT_TOLERATION
    api.create(after)
    wait_for(lambda: job_condition(api, "after", "Complete"), 15, "next job")
    assert the_pod(api, "after")["spec"]["nodeName"] != node


def test_suspend_deletes_active_pods_and_resume_starts_again(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("sus", TRAP, backoff_limit=0))
    name = running_pod(api, sim, "sus")["metadata"]["name"]
    api.patch("jobs", "sus", {"spec": {"suspend": True}})
    wait_for(lambda: job_condition(api, "sus", "Suspended"), 10, "job suspended")
    wait_for(lambda: api.get_or_none("pods", name) is None, 10, "pod gone")
    assert "got SIGTERM" in sim.log(name)
    api.patch("jobs", "sus", {"spec": {"suspend": False}})
    wait_for(lambda: [p for p in job_pods(api, "sus") if p["metadata"]["name"] != name], 10, "a new pod")
    assert the_condition(api.get("jobs", "sus"), "Suspended")["status"] == "False"


def test_active_deadline_fails_the_job(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("slow", TRAP, activeDeadlineSeconds=1))
    wait_for(lambda: job_condition(api, "slow", "Failed"), 15, "deadline")
    failed = job_condition(api, "slow", "Failed")
    assert failed is not None and failed["reason"] == "DeadlineExceeded"
    wait_for(lambda: not [p for p in job_pods(api, "slow") if p["status"]["phase"] == "Running"], 10, "pod stopped")


def test_pod_active_deadline_stops_it_like_kubelet_and_keeps_the_pod(api: ApiServerThread, sim: PodSim) -> None:
    """Lowering a running pod's spec.activeDeadlineSeconds: SIGTERM, then the pod ends Failed
    with reason DeadlineExceeded and stays, log and all (what the operator's stop relies on)."""
    api.create(job_manifest("late", TRAP))
    name = running_pod(api, sim, "late")["metadata"]["name"]
    api.patch("pods", name, {"spec": {"activeDeadlineSeconds": 1}})
    pod = wait_for(lambda: (p := api.get("pods", name))["status"]["phase"] == "Failed" and p, 15, "pod Failed")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 143 and term["message"] == '{"reason": "sigterm"}'  # SIGTERM, not SIGKILL
    assert "got SIGTERM" in sim.log(name)
    wait_for(lambda: job_condition(api, "late", "Failed"), 10, "job to fail")
    failed = job_condition(api, "late", "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    assert [p["metadata"]["name"] for p in job_pods(api, "late")] == [name]  # kept, not replaced

    from .helpers import http

    assert "got SIGTERM" in http(api, "GET", f"/api/v1/namespaces/default/pods/{name}/log")[1]


def test_pod_active_deadline_kills_after_grace_when_sigterm_is_ignored(api: ApiServerThread, sim: PodSim) -> None:
    manifest = job_manifest("stubborn-late", STUBBORN)
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    api.create(manifest)
    name = running_pod(api, sim, "stubborn-late")["metadata"]["name"]
    api.patch("pods", name, {"spec": {"activeDeadlineSeconds": 1}})
    pod = wait_for(lambda: (p := api.get("pods", name))["status"]["phase"] == "Failed" and p, 15, "pod Failed")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


def test_pod_active_deadline_from_the_template_counts_from_the_pod_start(api: ApiServerThread, sim: PodSim) -> None:
    manifest = job_manifest("bounded", TRAP)
    manifest["spec"]["template"]["spec"]["activeDeadlineSeconds"] = 2
    api.create(manifest)
    name = running_pod(api, sim, "bounded")["metadata"]["name"]
    assert api.get("pods", name)["status"]["phase"] == "Running"
    pod = wait_for(lambda: (p := api.get("pods", name))["status"]["phase"] == "Failed" and p, 15, "pod Failed")
    assert pod["status"]["reason"] == "DeadlineExceeded" and "got SIGTERM" in sim.log(name)


def test_pod_active_deadline_may_be_lowered_but_never_raised_or_removed(api: ApiServerThread, sim: PodSim) -> None:
    from .helpers import http

    manifest = job_manifest("fixed", TRAP)
    manifest["spec"]["template"]["spec"]["activeDeadlineSeconds"] = 600
    api.create(manifest)
    name = running_pod(api, sim, "fixed")["metadata"]["name"]
    path = f"/api/v1/namespaces/default/pods/{name}"
    merge = "application/merge-patch+json"
    status, body = http(api, "PATCH", path, {"spec": {"activeDeadlineSeconds": 601}}, content_type=merge)
    assert status == 422 and body["reason"] == "Invalid"
    assert (
        "spec.activeDeadlineSeconds: Invalid value: 601: must be less than or equal to previous value"
        in body["message"]
    )
    status, body = http(api, "PATCH", path, {"spec": {"activeDeadlineSeconds": None}}, content_type=merge)
    assert status == 422 and "must not update from a positive integer to nil value" in body["message"]
    pod = api.get("pods", name)
    del pod["spec"]["activeDeadlineSeconds"]
    status, body = http(api, "PUT", path, pod)
    assert status == 422 and "must not update from a positive integer to nil value" in body["message"]
    status, _ = http(api, "PATCH", path, {"spec": {"activeDeadlineSeconds": 300}}, content_type=merge)
    assert status == 200 and api.get("pods", name)["spec"]["activeDeadlineSeconds"] == 300
    assert api.get("pods", name)["status"]["phase"] == "Running"  # 300 s from its start are not over


PATCH_OWN_POD = r"""
import json, os, ssl, urllib.request
e = os.environ
url = "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (e["KUBERNETES_SERVICE_HOST"], e["KUBERNETES_SERVICE_PORT"],
                                                     e["RESPAWN_POD_NAMESPACE"], e["RESPAWN_POD_NAME"])
sa = e["RESPAWN_SERVICEACCOUNT_DIR"]
token = open(os.path.join(sa, "token")).read()
body = json.dumps({"metadata": {"annotations": {"respawn.dev/progress": "3/5"}}}).encode()
req = urllib.request.Request(url, data=body, method="PATCH", headers={"Content-Type": "application/merge-patch+json",
                                                                      "Authorization": "Bearer " + token})
urllib.request.urlopen(req, context=ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))).read()
"""


def test_pod_can_patch_its_own_annotations_with_its_mounted_token(api: ApiServerThread, sim: PodSim) -> None:
    for manifest in runner_rbac("default"):
        api.create(manifest)
    job = job_manifest("progress", PATCH_OWN_POD)
    job["spec"]["template"]["spec"]["serviceAccountName"] = "respawn-runner"
    api.create(job)
    wait_for(lambda: job_condition(api, "progress", "Complete"), 15, "job")
    assert the_pod(api, "progress")["metadata"]["annotations"]["respawn.dev/progress"] == "3/5"
    assert api.denials == []


def test_pod_without_rbac_is_refused_and_the_refusal_is_recorded(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("norbac", PATCH_OWN_POD))  # the namespace's `default` ServiceAccount: no rights
    wait_for(lambda: job_condition(api, "norbac", "Failed"), 15, "job to fail")
    assert "respawn.dev/progress" not in (the_pod(api, "norbac")["metadata"].get("annotations") or {})
    assert api.denials == [
        (
            "system:serviceaccount:default:default",
            'cannot patch resource "pods" in API group "" in the namespace "default"',
            403,
        )
    ]


def test_scheduler_follows_the_node_objects_cordon_and_taints(api: ApiServerThread, sim: PodSim) -> None:
    api.patch("nodes", "ondemand-1", {"spec": {"unschedulable": True}}, namespace=None)  # kubectl cordon
    wait_for(lambda: sim.node_objects[("", "ondemand-1")]["spec"].get("unschedulable"), 5, "podsim to see the cordon")
    api.create(job_manifest("waits", "pass"))
    cond = wait_for(lambda: condition(the_pod(api, "waits"), "PodScheduled"), 10, "unschedulable")
    assert cond["reason"] == "Unschedulable"
    api.patch("nodes", "ondemand-1", {"spec": {"unschedulable": None}}, namespace=None)
    wait_for(lambda: job_condition(api, "waits", "Complete"), 15, "job after uncordon")
    assert the_pod(api, "waits")["spec"]["nodeName"] == "ondemand-1"
    api.patch(
        "nodes", "ondemand-1", {"spec": {"taints": [{"key": "maintenance", "effect": "NoSchedule"}]}}, namespace=None
    )
    wait_for(lambda: sim.node_objects[("", "ondemand-1")]["spec"].get("taints"), 5, "podsim to see the taint")
    tolerant = job_manifest("tolerant", "pass")
    tolerant["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    tolerant["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "ondemand-1"}
    api.create(tolerant)
    wait_for(lambda: job_condition(api, "tolerant", "Complete"), 15, "a pod tolerating every taint")
    # The kubelet's heartbeat lease exists, owned by the Node.
    lease = api.get("leases", "ondemand-1", "kube-node-lease")
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"


SLOW_STOP = r"""
import signal, sys, time
def stop(signum, frame):
    time.sleep(0.7)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _replacement_order(api: ApiServerThread, sim: PodSim, policy: str) -> tuple[int, int]:
    """(rv at which the old pod turned Failed, rv at which the replacement appeared)."""
    manifest = job_manifest("rep", SLOW_STOP, backoff_limit=1)
    manifest["spec"]["podReplacementPolicy"] = policy
    api.create(manifest)
    old = running_pod(api, sim, "rep")["metadata"]["name"]
    sim.delete_pod(old, grace=5, wait=False)
    wait_for(lambda: [p for p in job_pods(api, "rep") if p["metadata"]["name"] != old], 15, "a replacement pod")
    wait_for(lambda: api.get_or_none("pods", old) is None, 15, "the old pod to go")
    history = api.call(lambda: [(e.rv, e.type, e.obj) for e in api.server.history if e.rkey == ("", "pods")])
    failed_at = min(rv for rv, _, o in history if o["metadata"]["name"] == old and o["status"].get("phase") == "Failed")
    added_at = min(
        rv
        for rv, t, o in history
        if t == "ADDED" and o["metadata"]["name"] != old and o["metadata"]["labels"].get("job-name") == "rep"
    )
    return failed_at, added_at


def test_pod_replacement_policy_failed_waits_for_the_terminating_pod(api: ApiServerThread, sim: PodSim) -> None:
    failed_at, added_at = _replacement_order(api, sim, "Failed")
    assert added_at > failed_at


def test_pod_replacement_policy_terminating_or_failed_replaces_at_once(api: ApiServerThread, sim: PodSim) -> None:
    failed_at, added_at = _replacement_order(api, sim, "TerminatingOrFailed")
    assert added_at < failed_at
    assert api.get("jobs", "rep")["status"]["failed"] == 1


def test_force_deleted_pod_still_gets_its_process_stopped(api: ApiServerThread, sim: PodSim) -> None:
    api.create(job_manifest("forced", TRAP))
    name = running_pod(api, sim, "forced")["metadata"]["name"]
    proc = sim.process(name)
    assert proc is not None
    api.delete("pods", name, grace_period_seconds=0)  # kubectl delete --force --grace-period=0
    assert api.get_or_none("pods", name) is None
    wait_for(lambda: proc.process.returncode is not None, 10, "the process to be stopped")
    assert proc.process.returncode == 143 and "got SIGTERM" in sim.log(name)


def test_kubectl_logs_follow_streams_until_the_pod_ends(api: ApiServerThread, sim: PodSim, kubectl: Any) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
    api.create(job_manifest("ticks", code))
    name = wait_for(
        lambda: (p := the_pod(api, "ticks"))["metadata"].get("annotations", {}).get("respawn.dev/sim-log") and p,
        10,
        "the pod to start",
    )["metadata"]["name"]
    out = kubectl("logs", "-f", name).stdout
    assert out.splitlines() == ["tick 0", "tick 1", "tick 2"]
    assert kubectl("logs", name, "--tail=1").stdout == "tick 2\n"


def test_scheduling_gates_hold_a_pod_until_removed(api: ApiServerThread, sim: PodSim) -> None:
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gated"},
            "spec": {
                "restartPolicy": "Never",
                "schedulingGates": [{"name": "kueue.x-k8s.io/admission"}],
                "containers": [{"name": "main", "image": "python", "command": [PY, "-c", "print('admitted')"]}],
            },
        }
    )
    api.create(job_manifest("marker", "pass"))  # a later pod goes through while the gated one waits
    wait_for(lambda: job_condition(api, "marker", "Complete"), 15, "the marker job")
    assert "nodeName" not in api.get("pods", "gated")["spec"]
    api.patch("pods", "gated", {"spec": {"schedulingGates": None}})
    wait_for(lambda: api.get("pods", "gated")["status"]["phase"] == "Succeeded", 15, "the released pod to run")
    assert "admitted" in sim.log("gated")


class _OneBrokenJob(PodSim):
    """A simulator whose Job controller fails on one Job every time (a bug, an odd object)."""

    async def _sync_job(self, job: dict[str, Any]) -> None:
        if job["metadata"]["name"] == "broken":
            raise RuntimeError("this Job cannot be synced")
        await super()._sync_job(job)


def test_one_job_that_cannot_be_synced_never_stalls_the_others(api: ApiServerThread, tmp_path: Any) -> None:
    with _OneBrokenJob.attached(api, work_dir=str(tmp_path / "sim")) as sim:
        api.create(job_manifest("broken", "pass"))
        api.create(job_manifest("fine", "pass"))
        wait_for(lambda: job_condition(api, "fine", "Complete"), 15, "the healthy job")
        assert any("broken" in e for e in sim.errors)

"""The chart installed the way a user installs it, against an API server that authenticates
and authorizes every request.

Every manifest `helm install` would create is applied to the emulator (HTTPS, tokens,
RBAC). The operator runs as the chart's Deployment would run it: its env and args,
and no kubeconfig, only a ServiceAccount token and CA in a folder, read by the same
in-cluster loading code a pod uses (KUBERNETES_SERVICE_HOST/PORT). Pipeline pods get
a token of the runner ServiceAccount bound to them, as kubelet mounts it. Then a
PipelineRun is preempted, resumes, succeeds and is deleted, and no request anywhere
was refused. A missing RBAC rule shows up here as a refused request.

What the emulator cannot check (admission policies, RBAC escalation rules) is listed
in docs/emulator.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from respawn_local.apiserver import ApiServerThread
from respawn_local.podsim import PodSim
from respawn_local.testkit import free_port, wait_for

from tests.operator.harness import Cluster, OperatorProcess
from tests.ship.chart_render import NAMESPACE, Manifest, render

pytestmark = pytest.mark.slow  # the chart installed on the emulator and a run through it

RUNS = "pipelines"

INSTALLS: dict[str, dict[str, Any]] = {
    "clusterwide": {"runner": {"namespaces": [RUNS]}},
    "namespaced": {"runner": {"namespaces": [RUNS]}, "config": {"watchNamespaces": [RUNS]}},
}


def apply_all(api: ApiServerThread, manifests: list[Manifest]) -> None:
    """`helm install`: CRDs first, then the rest, each into its namespace."""
    for m in sorted(manifests, key=lambda m: m.kind != "CustomResourceDefinition"):
        cluster_scoped = m.kind in (
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        )
        api.create(m.obj, namespace=None if cluster_scoped else m.namespace or NAMESPACE)


def operator_env(deployment: dict[str, Any], tmp: Path) -> tuple[dict[str, str], list[str]]:
    """The chart's operator container as a process: its env (downward API filled in) and args."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "respawn-operator-0"
        else:
            raise AssertionError(f"the test cannot fill in env {item}")
    args = [a for a in container["args"][1:] if not a.startswith("--liveness=")]
    # Servers bind 127.0.0.1 on a free port here, not the chart's 0.0.0.0:8081.
    args.append(f"--liveness=http://127.0.0.1:{free_port()}/healthz")
    env["RESPAWN_METRICS_PORT"] = "0"
    return env, args


@contextlib.contextmanager
def installed(
    tmp: Path, values: dict[str, Any], edit: Callable[[list[Manifest]], None] | None = None
) -> Iterator[Cluster]:
    values = {**values, "config": {**values.get("config", {}), "defaultCheckpointUri": f"file://{tmp / 'checkpoints'}"}}
    manifests = render(values)
    if edit is not None:
        edit(manifests)
    api = ApiServerThread()
    api.start()
    for ns in (NAMESPACE, RUNS):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    apply_all(api, manifests)
    deployment = next(m.obj for m in manifests if m.kind == "Deployment")
    sa_name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    sa_dir = tmp / "operator-serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(api.service_account_token(NAMESPACE, sa_name))
    assert api.ca_file is not None
    (sa_dir / "ca.crt").write_bytes(Path(api.ca_file).read_bytes())
    host, port = api.url.removeprefix("https://").rsplit(":", 1)
    env, args = operator_env(deployment, tmp)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "RESPAWN_"))}
    env = {
        **clean,
        **env,
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "RESPAWN_SERVICEACCOUNT_DIR": str(sa_dir),
        "HOME": str(tmp),  # no ~/.kube/config to fall back on
        "RESPAWN_RESYNC_SECONDS": "2",
    }
    sim = PodSim.attached(api, work_dir=str(tmp / "podsim"))
    sim.start()
    op = OperatorProcess(env, tmp / "operator.log", args)
    op.start()
    try:
        yield Cluster(api, sim, op, tmp, "", 0, namespace=RUNS)
    finally:
        op.stop()
        sim.stop()
        api.stop()
        print(f"operator log: {tmp / 'operator.log'}")


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_installed_chart_runs_preempts_resumes_and_cleans_up_with_no_request_refused(
    tmp_path: Path, install: str
) -> None:
    with installed(tmp_path, INSTALLS[install]) as cluster:
        cluster.submit("helm", {"step_s": 0.4})
        cluster.wait_status(
            "helm",
            lambda st: (st.get("completedSteps") or 0) >= 1 and st.get("currentStep"),
            "a first commit reported by the pod's own progress annotation",
        )
        cluster.sim.preempt(cluster.running_pod("helm", 1), RUNS, reason="TerminationByKubelet", grace=10)
        st = cluster.wait_phase("helm", "Succeeded")
        assert [a["outcome"] for a in st["attempts"]] == ["Preempted", "Succeeded"]
        assert st["attempts"][1]["resumedFrom"]
        assert (tmp_path / "helm.out").read_text() == "a,b,c,d,e 11111\n"
        assert [s for s, _ in cluster.executions("helm")].count("a") == 1  # resumed, not restarted
        job = cluster.api.get("jobs", "helm-a2", RUNS)
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "respawn-runner"
        cluster.api.delete("pipelineruns", "helm", RUNS)
        wait_for(
            lambda: cluster.api.get_or_none("pipelineruns", "helm", RUNS) is None,
            60,
            "the run's finalizer to be removed after cleanup",
        )
        assert cluster.api.denials == []
        assert cluster.sim.errors == []
        assert "API credentials: in-cluster" in (tmp_path / "operator.log").read_text()


def test_a_missing_rbac_rule_is_a_refused_request(tmp_path: Path) -> None:
    def drop_job_create(manifests: list[Manifest]) -> None:
        role = next(m.obj for m in manifests if m.kind == "ClusterRole" and m.name.endswith("-operator"))
        for rule in role["rules"]:
            if "jobs" in rule.get("resources", []):
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]

    with installed(tmp_path, INSTALLS["clusterwide"], drop_job_create) as cluster:
        cluster.submit("norights", {"step_s": 0.1})
        refused = wait_for(
            lambda: [d for d in cluster.api.denials if "create" in d[1] and '"jobs"' in d[1]],
            60,
            "the operator's job create to be refused",
        )
        assert refused[0][0] == f"system:serviceaccount:{NAMESPACE}:respawn"
        assert cluster.api.list("jobs", RUNS) == []


def test_without_any_credentials_the_operator_says_how_to_give_some(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "RESPAWN_"))}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing"), RESPAWN_SERVICEACCOUNT_DIR=str(tmp_path))
    op = OperatorProcess(env, tmp_path / "operator.log", ["--standalone"])
    op.start()
    assert op.proc is not None
    op.proc.wait(60)
    log = (tmp_path / "operator.log").read_text()
    assert op.proc.returncode != 0
    assert "no Kubernetes credentials" in log and "set KUBECONFIG" in log, log

"""CRDs served dynamically, discovery, and kubectl v1.32 against the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from respawn_local.apiserver import ApiServerThread

from .helpers import WIDGET_CRD, http, widget

Kubectl = Callable[..., Any]


def test_discovery_documents(api: ApiServerThread, crd: Any) -> None:
    status, version = http(api, "GET", "/version")
    assert status == 200 and version["major"] == "1"
    assert http(api, "GET", "/api")[1]["versions"] == ["v1"]
    groups = {g["name"]: g for g in http(api, "GET", "/apis")[1]["groups"]}
    assert {"batch", "coordination.k8s.io", "apiextensions.k8s.io", "events.k8s.io", "test.respawn.dev"} <= set(groups)
    assert groups["test.respawn.dev"]["preferredVersion"] == {"groupVersion": "test.respawn.dev/v1", "version": "v1"}
    resources = {r["name"]: r for r in http(api, "GET", "/apis/test.respawn.dev/v1")[1]["resources"]}
    assert resources["widgets"]["shortNames"] == ["wd"] and resources["widgets"]["categories"] == ["testing"]
    assert resources["widgets"]["namespaced"] is True and resources["widgets"]["singularName"] == "widget"
    assert "widgets/status" in resources
    core = {r["name"] for r in http(api, "GET", "/api/v1")[1]["resources"]}
    assert {
        "pods",
        "pods/status",
        "pods/eviction",
        "pods/log",
        "events",
        "nodes",
        "namespaces",
        "configmaps",
        "secrets",
        "serviceaccounts",
    } <= core
    assert http(api, "GET", "/openapi/v2")[0] == 404


def test_crd_gets_established_and_cluster_scoped_crds_work(api: ApiServerThread) -> None:
    crd = api.create(WIDGET_CRD)
    stored = api.get("customresourcedefinitions", crd["metadata"]["name"], namespace=None)
    assert any(c["type"] == "Established" and c["status"] == "True" for c in stored["status"]["conditions"])
    cluster = json.loads(json.dumps(WIDGET_CRD))
    cluster["metadata"]["name"] = "gadgets.test.respawn.dev"
    cluster["spec"]["scope"] = "Cluster"
    cluster["spec"]["names"] = {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"}
    del cluster["spec"]["versions"][0]["subresources"]
    api.create(cluster)
    status, obj = http(
        api,
        "POST",
        "/apis/test.respawn.dev/v1/gadgets",
        {
            "apiVersion": "test.respawn.dev/v1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "spec": {"size": 1},
            "status": {"phase": "kept"},
        },
    )
    assert status == 201 and "namespace" not in obj["metadata"]
    assert obj["status"] == {"phase": "kept"}  # no status subresource: status is ordinary data
    status, _ = http(api, "GET", "/apis/test.respawn.dev/v1/gadgets/g/status")
    assert status == 404
    bad = json.loads(json.dumps(WIDGET_CRD))
    bad["metadata"]["name"] = "wrong.name"
    status, body = http(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert status == 422


def test_table_uses_printer_columns(api: ApiServerThread, crd: Any) -> None:
    api.create(widget("a", size=7))
    api.patch("widgets", "a", {"status": {"phase": "Running"}}, subresource="status")
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = http(api, "GET", "/apis/test.respawn.dev/v1/namespaces/default/widgets", accept=accept)
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:3] == ["a", 7, "Running"] and cells[3].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_kubectl_apply_get_patch_delete(api: ApiServerThread, kubectl: Kubectl, tmp_path: Any) -> None:
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(yaml.safe_dump(WIDGET_CRD))
    assert "created" in kubectl("apply", "-f", str(crd_file)).stdout
    manifest = tmp_path / "w.yaml"
    manifest.write_text(yaml.safe_dump(widget("w1", size=3)))
    assert "widget.test.respawn.dev/w1 created" in kubectl("apply", "-f", str(manifest)).stdout
    api.patch("widgets", "w1", {"status": {"phase": "Running"}}, subresource="status")
    out = kubectl("get", "widgets").stdout.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert out[1].split()[:3] == ["w1", "3", "Running"]
    # Short names, categories and -o json work through discovery.
    assert kubectl("get", "wd", "w1", "-o", "jsonpath={.spec.color}").stdout == "red"
    assert "w1" in kubectl("get", "testing").stdout
    # Re-apply with a change: kubectl computes a merge patch against last-applied.
    manifest.write_text(yaml.safe_dump(widget("w1", size=4)))
    assert "configured" in kubectl("apply", "-f", str(manifest)).stdout
    assert api.get("widgets", "w1")["spec"]["size"] == 4
    assert api.get("widgets", "w1")["metadata"]["generation"] == 2
    # A malformed spec is rejected at apply time by the CRD schema.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(widget("w2", size=-1, color="green")))
    result = kubectl("apply", "-f", str(bad), check=False)
    assert result.returncode != 0 and "spec.size" in result.stderr and "spec.color" in result.stderr
    # Unknown fields: kubectl asks for strict field validation, and gets it.
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump(widget("w3", typo=1)))
    result = kubectl("apply", "-f", str(unknown), check=False)
    assert result.returncode != 0 and 'unknown field "spec.typo"' in result.stderr
    kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":5}}')
    assert api.get("widgets", "w1")["spec"]["size"] == 5
    kubectl("delete", "widget", "w1")
    assert api.get_or_none("widgets", "w1") is None


def test_kubectl_builtins(api: ApiServerThread, kubectl: Kubectl, tmp_path: Any) -> None:
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert "job.batch/j created" in kubectl("apply", "-f", str(path)).stdout
    # A re-apply sends a strategic merge patch; a Job's template is immutable, like kube.
    job["metadata"]["labels"] = {"team": "data"}
    path.write_text(yaml.safe_dump(job))
    assert "job.batch/j configured" in kubectl("apply", "-f", str(path)).stdout
    assert api.get("jobs", "j")["metadata"]["labels"]["team"] == "data"
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["echo", "hi"]
    path.write_text(yaml.safe_dump(job))
    result = kubectl("apply", "-f", str(path), check=False)
    assert result.returncode != 0 and "field is immutable" in result.stderr
    out = kubectl("get", "jobs").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        }
    )
    out = kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and out[1].split()[:3] == [
        "p",
        "0/1",
        "Pending",
    ]
    assert "default" in kubectl("get", "namespaces").stdout
    assert "n1" in kubectl("get", "nodes").stdout
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "b"}}
        ),
    )
    assert api.get("configmaps", "applied")["data"] == {"a": "b"}


def test_kubectl_imperative_commands_send_protobuf(api: ApiServerThread, kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "demo")
    kubectl("create", "configmap", "cm", "--from-literal=a=b", "-n", "demo")
    kubectl("create", "secret", "generic", "s", "--from-literal=k=v", "-n", "demo")
    kubectl("create", "serviceaccount", "sa", "-n", "demo")
    assert api.get("configmaps", "cm", "demo")["data"] == {"a": "b"}
    assert api.get("secrets", "s", "demo")["data"] == {"k": "dg=="}
    assert api.get("serviceaccounts", "sa", "demo")["metadata"]["uid"]
    kubectl("label", "configmap", "cm", "app=x", "-n", "demo")
    assert kubectl("get", "cm", "-n", "demo", "-l", "app=x", "-o", "name").stdout.strip() == "configmap/cm"
    # Kinds the emulator cannot decode from protobuf say so.
    result = kubectl("create", "job", "j", "--image=busybox", "--", "true", check=False)
    assert result.returncode != 0 and "send JSON" in result.stderr


def test_kubectl_drain_evicts_through_the_eviction_api(api: ApiServerThread, kubectl: Kubectl) -> None:
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        }
    )
    api.patch("pods", "p", {"status": {"phase": "Running"}}, subresource="status")
    result = kubectl("drain", "n1", "--force", "--timeout=1s", check=False)
    assert "evicting pod default/p" in result.stderr + result.stdout
    assert api.get("nodes", "n1", namespace=None)["spec"]["unschedulable"] is True
    pod = api.get("pods", "p")  # no kubelet here: it stays terminating
    assert pod["metadata"]["deletionTimestamp"]
    assert [c["reason"] for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget"] == [
        "EvictionByEvictionAPI"
    ]


def test_kubectl_get_watch_prints_printer_columns(
    api: ApiServerThread, crd: Any, kubeconfig: str, tmp_path: Any
) -> None:
    import subprocess
    import threading

    from respawn_local.testkit import wait_for

    api.create(widget("a", size=1))
    proc = subprocess.Popen(
        ["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "cache"), "get", "widgets", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 2, 15, "kubectl's initial table")
        api.patch("widgets", "a", {"status": {"phase": "Running"}}, subresource="status")
        wait_for(lambda: any("Running" in line for line in lines), 15, "the watched change")
    finally:
        proc.terminate()
        proc.wait(10)
    assert lines[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert [line.split()[:3] for line in lines if "Running" in line] == [["a", "1", "Running"]]
    assert sum(1 for line in lines if line.startswith("NAME")) == 1


def test_project_crd_serves_pipelineruns_with_their_printer_columns(api: ApiServerThread, kubectl: Kubectl) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    crd_path = root / "crds" / "pipelineruns.respawn.dev.yaml"
    if not crd_path.exists():
        import pytest

        pytest.skip("crds/pipelineruns.respawn.dev.yaml is not generated yet")
    kubectl("apply", "-f", str(crd_path))
    runs = [
        p
        for p in sorted((root / "examples").glob("*.yaml"))
        if any((d or {}).get("kind") == "PipelineRun" for d in yaml.safe_load_all(p.read_text()))
    ]
    for path in runs:
        kubectl("apply", "-f", str(path))
    header = kubectl("get", "pipelineruns").stdout.splitlines()[0].split()
    assert header[0] == "NAME" and header[-1] == "AGE" and "PHASE" in header and "PREEMPTIONS" in header
    assert kubectl("get", "prun", "-o", "name").stdout.count("pipelinerun.respawn.dev/") == len(runs)

"""Deletion: finalizers, propagation policies, ownerReference GC, graceful pod deletion, eviction."""

from __future__ import annotations

from typing import Any

from respawn_local.apiserver import ApiServerThread
from respawn_local.testkit import wait_for

from .helpers import condition, http, widget


def owned_cm(name: str, owner: dict[str, Any], block: bool = True) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": block,
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [ref]}}


def test_finalizers_hold_the_object_until_removed(api: ApiServerThread, crd: Any) -> None:
    api.create({**widget("a"), "metadata": {"name": "a", "finalizers": ["respawn.dev/cleanup"]}})
    status, obj = http(api, "DELETE", "/apis/test.respawn.dev/v1/namespaces/default/widgets/a")
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    held = api.get("widgets", "a")
    assert held["metadata"]["finalizers"] == ["respawn.dev/cleanup"]
    assert held["metadata"]["generation"] == 2  # kube bumps it when the deletion starts
    # Adding a finalizer to an object being deleted is refused, status writes still work.
    status, _ = http(
        api,
        "PATCH",
        "/apis/test.respawn.dev/v1/namespaces/default/widgets/a",
        {"metadata": {"finalizers": ["respawn.dev/cleanup", "other"]}},
        content_type="application/merge-patch+json",
    )
    assert status == 422
    api.patch("widgets", "a", {"status": {"phase": "Deleting"}}, subresource="status")
    api.patch("widgets", "a", {"metadata": {"finalizers": None}})
    assert api.get_or_none("widgets", "a") is None


def test_background_gc_deletes_dependents_of_a_gone_owner(api: ApiServerThread, crd: Any) -> None:
    owner = api.create(widget("owner"))
    api.create(owned_cm("dep", owner))
    other = api.create(widget("other"))
    shared = owned_cm("shared", owner)
    shared["metadata"]["ownerReferences"].append(
        {"apiVersion": other["apiVersion"], "kind": "Widget", "name": "other", "uid": other["metadata"]["uid"]}
    )
    api.create(shared)
    api.delete("widgets", "owner")
    assert api.get_or_none("widgets", "owner") is None  # background: the owner goes first
    wait_for(lambda: api.get_or_none("configmaps", "dep") is None, 5, "dependent to be collected")
    # A dependent with another live owner stays, with the dangling reference removed.
    wait_for(
        lambda: len(api.get("configmaps", "shared")["metadata"]["ownerReferences"]) == 1, 5, "dangling ref removed"
    )


def test_foreground_deletion_waits_for_blocking_dependents(api: ApiServerThread, crd: Any) -> None:
    owner = api.create(widget("owner"))
    dep = owned_cm("dep", owner)
    dep["metadata"]["finalizers"] = ["test/hold"]
    api.create(dep)
    api.delete("widgets", "owner", propagation_policy="Foreground")
    held = api.get("widgets", "owner")
    assert held["metadata"]["deletionTimestamp"] and "foregroundDeletion" in held["metadata"]["finalizers"]
    wait_for(lambda: api.get("configmaps", "dep")["metadata"].get("deletionTimestamp"), 5, "dependent deletion")
    assert api.get_or_none("widgets", "owner") is not None
    api.patch("configmaps", "dep", {"metadata": {"finalizers": None}})
    wait_for(lambda: api.get_or_none("widgets", "owner") is None, 5, "owner removed after its dependents")


def test_orphan_keeps_dependents_and_jobs_orphan_by_default(api: ApiServerThread, crd: Any) -> None:
    owner = api.create(widget("owner"))
    api.create(owned_cm("dep", owner))
    status, _ = http(
        api, "DELETE", "/apis/test.respawn.dev/v1/namespaces/default/widgets/owner?propagationPolicy=Orphan"
    )
    assert status == 200
    assert "ownerReferences" not in api.get("configmaps", "dep")["metadata"]
    job = api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        }
    )
    api.create(owned_cm("job-dep", job))
    api.delete("jobs", "j")  # no policy: batch/v1 Jobs orphan, like the real server
    assert "ownerReferences" not in api.get("configmaps", "job-dep")["metadata"]


def test_delete_collection_with_selector(api: ApiServerThread) -> None:
    for name, app in [("a", "x"), ("b", "x"), ("c", "y")]:
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}})
    status, _ = http(api, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=app%3Dx")
    assert status == 200
    assert [o["metadata"]["name"] for o in api.list("configmaps", "default")] == ["c"]


def _pod(name: str, node: str | None = None, grace: int = 30) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}], "terminationGracePeriodSeconds": grace}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_pod_delete_is_graceful_on_a_node_and_immediate_when_unscheduled(api: ApiServerThread) -> None:
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    api.create(_pod("running", node="n1", grace=20))
    api.create(_pod("unscheduled"))
    status, pod = http(api, "DELETE", "/api/v1/namespaces/default/pods/running")
    assert status == 200
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 20 and pod["metadata"]["deletionTimestamp"]
    assert api.get_or_none("pods", "running") is not None  # the kubelet finishes it
    http(api, "DELETE", "/api/v1/namespaces/default/pods/unscheduled")
    assert api.get_or_none("pods", "unscheduled") is None
    # The kubelet's final delete with grace 0 removes it.
    http(api, "DELETE", "/api/v1/namespaces/default/pods/running?gracePeriodSeconds=0")
    assert api.get_or_none("pods", "running") is None


def test_eviction_marks_disruption_target_and_deletes_gracefully(api: ApiServerThread) -> None:
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    api.create(_pod("p", node="n1", grace=10))
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "p", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 7},
    }
    status, answer = http(api, "POST", "/api/v1/namespaces/default/pods/p/eviction", body)
    assert status == 201 and answer["status"] == "Success"
    pod = api.get("pods", "p")
    cond = condition(pod, "DisruptionTarget")
    assert cond is not None and cond["status"] == "True" and cond["reason"] == "EvictionByEvictionAPI"
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 7


def test_deleting_a_crd_removes_its_objects_and_routes(api: ApiServerThread, crd: Any) -> None:
    api.create(widget("a"))
    api.delete("customresourcedefinitions", "widgets.test.respawn.dev", namespace=None)
    status, _ = http(api, "GET", "/apis/test.respawn.dev/v1/namespaces/default/widgets")
    assert status == 404


def test_namespace_deletion_empties_it_first(api: ApiServerThread, crd: Any) -> None:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team"}})
    api.create({**widget("w"), "metadata": {"name": "w", "namespace": "team", "finalizers": ["test/hold"]}})
    status, ns = http(api, "DELETE", "/api/v1/namespaces/team")
    assert status == 200 and ns["status"]["phase"] == "Terminating"
    status, err = http(api, "POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "new"}})
    assert status == 403 and "being terminated" in err["message"]
    wait_for(lambda: api.get_or_none("configmaps", "c", "team") is None, 5, "content to be deleted")
    assert api.get("widgets", "w", "team")["metadata"]["deletionTimestamp"]
    assert api.get_or_none("namespaces", "team", None) is not None  # held by the finalizer of its content
    api.patch("widgets", "w", {"metadata": {"finalizers": None}}, namespace="team")
    wait_for(lambda: api.get_or_none("namespaces", "team", None) is None, 5, "namespace to go")
    assert http(api, "DELETE", "/api/v1/namespaces/default")[0] == 403

"""Object semantics a real API server gives: metadata, errors, selectors, writes, status isolation."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from respawn_local.apiserver import ApiServerThread

from .helpers import http, widget

W = "/apis/test.respawn.dev/v1/namespaces/default/widgets"


def test_create_sets_metadata_and_global_resource_version(api: ApiServerThread, crd: Any) -> None:
    status, a = http(api, "POST", W, widget("a"))
    assert status == 201
    meta = a["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert meta["namespace"] == "default" and a["kind"] == "Widget" and a["apiVersion"] == "test.respawn.dev/v1"
    _, b = http(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})
    # One counter for every resource type, as strings.
    assert int(b["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    _, listing = http(api, "GET", W)
    assert listing["kind"] == "WidgetList" and int(listing["metadata"]["resourceVersion"]) >= int(
        b["metadata"]["resourceVersion"]
    )


def test_generate_name(api: ApiServerThread) -> None:
    status, cm = http(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"generateName": "run-"}})
    assert status == 201
    name = cm["metadata"]["name"]
    assert name.startswith("run-") and len(name) == len("run-") + 5


def test_generation_bumps_on_spec_only(api: ApiServerThread, crd: Any) -> None:
    api.create(widget("a"))
    w = api.patch("widgets", "a", {"metadata": {"labels": {"x": "1"}}})
    assert w["metadata"]["generation"] == 1
    w = api.patch("widgets", "a", {"status": {"phase": "Running"}}, subresource="status")
    assert w["metadata"]["generation"] == 1
    w = api.patch("widgets", "a", {"spec": {"size": 2}})
    assert w["metadata"]["generation"] == 2
    # An identical write is a no-op: same resourceVersion, same generation.
    again = api.patch("widgets", "a", {"spec": {"size": 2}})
    assert again["metadata"]["resourceVersion"] == w["metadata"]["resourceVersion"]


def test_error_statuses(api: ApiServerThread, crd: Any) -> None:
    assert http(api, "POST", W, widget("a"))[0] == 201
    status, body = http(api, "POST", W, widget("a"))
    assert status == 409 and body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == "AlreadyExists" and body["details"] == {
        "name": "a",
        "kind": "widgets",
        "group": "test.respawn.dev",
    }
    status, body = http(api, "GET", W + "/nope")
    assert (
        status == 404
        and body["reason"] == "NotFound"
        and body["message"] == 'widgets.test.respawn.dev "nope" not found'
    )
    status, body = http(
        api, "POST", W, {"apiVersion": "test.respawn.dev/v1", "kind": "Widget", "metadata": {}, "spec": {"size": 1}}
    )
    assert status == 422 and body["reason"] == "Invalid"
    status, body = http(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "Bad_Name"}})
    assert status == 422
    status, body = http(api, "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert status == 404 and "nowhere" in body["message"]
    status, body = http(api, "PUT", W)
    assert status == 405 and body["reason"] == "MethodNotAllowed"
    status, body = http(api, "PATCH", W + "/a", {"spec": {}}, content_type="text/plain")
    assert status == 415
    status, body = http(api, "POST", W + "?dryRun=All", widget("dry"))
    assert status == 400 and api.get_or_none("widgets", "dry") is None  # never a silent real write


def test_schema_validation_pruning_and_defaults(api: ApiServerThread, crd: Any) -> None:
    status, body = http(api, "POST", W, widget("bad", size=-1, color="green", nick="TOOLONGNAME"))
    assert status == 422 and body["reason"] == "Invalid"
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields == {"spec.size", "spec.color", "spec.nick"}
    assert "greater than or equal to 0" in body["message"]
    status, body = http(
        api,
        "POST",
        W,
        {"apiVersion": "test.respawn.dev/v1", "kind": "Widget", "metadata": {"name": "nosize"}, "spec": {}},
    )
    assert status == 422 and body["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.size",
    }
    status, body = http(api, "POST", W, {**widget("typed"), "spec": {"size": "3"}})
    assert status == 422 and "must be of type integer" in body["message"]
    status, body = http(
        api, "POST", W, widget("ok", size=3, unknown=1, labels={"a": "b"}, extra={"free": {"x": 1}}, items=[1, 2])
    )
    assert status == 201
    spec = body["spec"]
    assert "unknown" not in spec  # pruned, not rejected
    assert spec["color"] == "red"  # defaulted
    assert spec["extra"] == {"free": {"x": 1}} and spec["labels"] == {"a": "b"} and spec["items"] == [1, 2]
    status, body = http(api, "POST", W + "?fieldValidation=Strict", widget("strict", unknown=1))
    assert status == 400 and 'unknown field "spec.unknown"' in body["message"]
    status, body = http(
        api, "PATCH", W + "/ok", {"spec": {"items": ["x"]}}, content_type="application/merge-patch+json"
    )
    assert status == 422


def test_put_and_patch_conflict_on_stale_resource_version(api: ApiServerThread, crd: Any) -> None:
    a = api.create(widget("a"))
    stale = a["metadata"]["resourceVersion"]
    api.patch("widgets", "a", {"spec": {"size": 5}})
    body = {**a, "spec": {"size": 9}}
    status, err = http(api, "PUT", W + "/a", body)
    assert status == 409 and err["reason"] == "Conflict" and "the object has been modified" in err["message"]
    status, err = http(
        api,
        "PATCH",
        W + "/a",
        {"metadata": {"resourceVersion": stale}, "spec": {"size": 9}},
        content_type="application/merge-patch+json",
    )
    assert status == 409
    fresh = api.get("widgets", "a")
    status, ok = http(api, "PUT", W + "/a", {**fresh, "spec": {"size": 9}})
    assert status == 200 and ok["spec"]["size"] == 9 and ok["metadata"]["generation"] == 3
    # PUT without a resourceVersion is an unconditional update, like kube.
    status, ok = http(api, "PUT", W + "/a", widget("a", size=10))
    assert status == 200 and ok["spec"]["size"] == 10 and ok["metadata"]["uid"] == a["metadata"]["uid"]


def test_patch_types(api: ApiServerThread) -> None:
    base = "/api/v1/namespaces/default/configmaps"
    http(api, "POST", base, {"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}})
    status, cm = http(
        api,
        "PATCH",
        base + "/c",
        {"metadata": {"labels": {"a": None}}, "data": {"y": "2"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and cm["metadata"]["labels"] == {"b": "2"} and cm["data"] == {"x": "1", "y": "2"}
    ops = [
        {"op": "add", "path": "/data/z", "value": "3"},
        {"op": "remove", "path": "/data/x"},
        {"op": "replace", "path": "/metadata/labels/b", "value": "two"},
    ]
    status, cm = http(api, "PATCH", base + "/c", ops, content_type="application/json-patch+json")
    assert status == 200 and cm["data"] == {"y": "2", "z": "3"} and cm["metadata"]["labels"] == {"b": "two"}
    status, _ = http(
        api,
        "PATCH",
        base + "/c",
        [{"op": "test", "path": "/data/y", "value": "nope"}],
        content_type="application/json-patch+json",
    )
    assert status == 422
    status, cm = http(
        api,
        "PATCH",
        base + "/c",
        {"data": {"w": "4"}, "$setElementOrder/x": []},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200 and cm["data"]["w"] == "4"


def test_status_subresource_isolation(api: ApiServerThread, crd: Any) -> None:
    created = api.create({**widget("a"), "status": {"phase": "Ignored"}})
    assert "status" not in created  # status is dropped on create
    status, w = http(
        api,
        "PATCH",
        W + "/a",
        {"spec": {"size": 4}, "status": {"phase": "Nope"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and w["spec"]["size"] == 4 and "status" not in w
    status, w = http(
        api,
        "PATCH",
        W + "/a/status",
        {"spec": {"size": 50}, "status": {"phase": "Running"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and w["status"] == {"phase": "Running"} and w["spec"]["size"] == 4
    status, w = http(api, "PUT", W + "/a/status", {**w, "status": {"phase": "Done"}, "spec": {"size": 1}})
    assert status == 200 and w["status"]["phase"] == "Done" and w["spec"]["size"] == 4


def test_label_and_field_selectors(api: ApiServerThread) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"app": "z", "tier": "db"})]:
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "d", "namespace": "other", "labels": {"app": "x"}},
        }
    )

    def names(selector: str, ns: str | None = None, fields: str | None = None) -> list[str]:
        return [o["metadata"]["name"] for o in api.list("configmaps", ns, selector, fields)]

    assert names("app=x", "default") == ["a"]
    assert names("app==x") == ["a", "d"]
    assert names("app!=x", "default") == ["b", "c"]
    assert names("app in (x, z)", "default") == ["a", "c"]
    assert names("app notin (x,z)", "default") == ["b"]
    assert names("tier", "default") == ["a", "c"]
    assert names("!tier", "default") == ["b"]
    assert names("app in (x,z),tier=db") == ["c"]
    assert names("", fields="metadata.name=d") == ["d"]
    assert names("", fields="metadata.namespace!=default") == ["d"]
    # Over HTTP with the kubernetes client, and an unsupported field is a 400.
    status, listing = http(
        api, "GET", "/api/v1/configmaps?labelSelector=app%20in%20(x)&fieldSelector=metadata.namespace%3Dother"
    )
    assert status == 200 and [o["metadata"]["name"] for o in listing["items"]] == ["d"]
    status, err = http(api, "GET", "/api/v1/configmaps?fieldSelector=data.x%3D1")
    assert status == 400 and "field label not supported" in err["message"]


def test_pod_field_selector_spec_node_name(api: ApiServerThread, k8s: Any) -> None:
    core = client.CoreV1Api(k8s)
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    for name, node in [("p1", "n1"), ("p2", None)]:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
        if node:
            spec["nodeName"] = node
        core.create_namespaced_pod("default", client.V1Pod.model_validate({"metadata": {"name": name}, "spec": spec}))
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    assert [p.to_dict()["metadata"]["name"] for p in pods] == ["p1"]
    assert core.read_namespaced_pod("p2", "default").to_dict()["status"]["phase"] == "Pending"


def test_kubernetes_client_round_trip(api: ApiServerThread, k8s: Any, crd: Any) -> None:
    co = client.CustomObjectsApi(k8s)
    created = co.create_namespaced_custom_object("test.respawn.dev", "v1", "default", "widgets", widget("a", size=2))
    assert isinstance(created, dict) and created["spec"] == {"size": 2, "color": "red"}
    co.patch_namespaced_custom_object_status(
        "test.respawn.dev", "v1", "default", "widgets", "a", {"status": {"phase": "Running"}}
    )
    got = co.get_namespaced_custom_object("test.respawn.dev", "v1", "default", "widgets", "a")
    assert isinstance(got, dict) and got["status"] == {"phase": "Running"}
    with pytest.raises(client.ApiException) as info:
        co.create_namespaced_custom_object("test.respawn.dev", "v1", "default", "widgets", widget("a"))
    assert info.value.status == 409
    batch = client.BatchV1Api(k8s)
    # The client's models type every field optional; to_dict() reads the answer as the JSON it came as.
    job = batch.create_namespaced_job(
        "default",
        client.V1Job.model_validate(
            {
                "metadata": {"name": "j"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
            }
        ),
    ).to_dict(serialize=True)
    # The real Job strategy labels the template with the controller uid.
    assert job["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    assert job["spec"]["backoffLimit"] == 6 and job["metadata"]["generation"] == 1
    leases = client.CoordinationV1Api(k8s)
    lease = leases.create_namespaced_lease(
        "default", client.V1Lease.model_validate({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}})
    )
    assert lease.to_dict()["spec"]["holder_identity"] == "me"
    events = client.CoreV1Api(k8s).create_namespaced_event(
        "default",
        client.CoreV1Event.model_validate(
            {
                "metadata": {"generateName": "a."},
                "involvedObject": {"kind": "Widget", "name": "a", "namespace": "default"},
                "reason": "Test",
                "message": "hello",
                "type": "Normal",
            }
        ),
    )
    assert events.to_dict()["metadata"]["name"].startswith("a.")
    client.EventsV1Api(k8s).create_namespaced_event(
        "default",
        client.EventsV1Event.model_validate(
            {
                "metadata": {"name": "e2"},
                "reason": "R",
                "action": "A",
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "reportingController": "x",
                "reportingInstance": "y",
            }
        ),
    )


def test_strategic_merge_patch_merges_lists_by_their_keys(api: ApiServerThread, crd: Any) -> None:
    def smp(path: str, patch: Any) -> tuple[int, Any]:
        return http(api, "PATCH", path, patch, content_type="application/strategic-merge-patch+json")

    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "main", "image": "v1", "command": ["run"]}, {"name": "side", "image": "s1"}]
            },
        }
    )
    status, pod = smp(
        "/api/v1/namespaces/default/pods/p",
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
                "containers": [{"name": "main", "image": "v2"}],
            }
        },
    )
    assert status == 200 and [(c["name"], c["image"]) for c in pod["spec"]["containers"]] == [
        ("main", "v2"),
        ("side", "s1"),
    ]
    assert pod["spec"]["containers"][0]["command"] == ["run"]  # merged by name, not replaced
    # pods/status conditions merge by type, as the kubelet relies on.
    api.patch("pods", "p", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, subresource="status")
    status, pod = smp(
        "/api/v1/namespaces/default/pods/p/status",
        {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "x"}]}},
    )
    assert status == 200 and [c["type"] for c in pod["status"]["conditions"]] == ["Ready", "DisruptionTarget"]
    # Lists with a merge key: add one, delete one with $patch: delete.
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "sa"},
            "imagePullSecrets": [{"name": "a"}, {"name": "b"}],
        }
    )
    status, sa = smp(
        "/api/v1/namespaces/default/serviceaccounts/sa",
        {"imagePullSecrets": [{"name": "c"}, {"name": "a", "$patch": "delete"}]},
    )
    assert status == 200 and sa["imagePullSecrets"] == [{"name": "b"}, {"name": "c"}]
    # finalizers merge as a set; $deleteFromPrimitiveList removes.
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a/x"]}})
    status, cm = smp("/api/v1/namespaces/default/configmaps/c", {"metadata": {"finalizers": ["b/y"]}})
    assert status == 200 and cm["metadata"]["finalizers"] == ["a/x", "b/y"]
    status, cm = smp(
        "/api/v1/namespaces/default/configmaps/c", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x", "b/y"]}}
    )
    assert status == 200 and "finalizers" not in cm["metadata"]
    # Custom resources take no strategic merge patch, like kube.
    api.create(widget("w"))
    assert smp(W + "/w", {"spec": {"size": 2}})[0] == 415


def test_pod_spec_and_job_template_are_immutable(api: ApiServerThread) -> None:
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "main", "image": "v1", "env": [{"name": "A", "value": "1"}]}]},
        }
    )
    status, err = http(
        api,
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        {"spec": {"containers": [{"name": "main", "image": "v1", "env": []}]}},
        content_type="application/merge-patch+json",
    )
    assert status == 422 and "pod updates may not change fields" in err["message"]
    assert api.patch("pods", "p", {"metadata": {"labels": {"x": "1"}}})["metadata"]["labels"] == {"x": "1"}
    job = api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        }
    )
    status, err = http(
        api,
        "PATCH",
        "/apis/batch/v1/namespaces/default/jobs/j",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "other"}]}}}},
        content_type="application/merge-patch+json",
    )
    assert status == 422 and "spec.template" in err["message"] and "field is immutable" in err["message"]
    patched = api.patch(
        "jobs", "j", {"spec": {"suspend": True, "template": {"spec": {"nodeSelector": {"pool": "spot"}}}}}
    )
    assert patched["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "spot"}  # suspended, never started
    assert patched["metadata"]["generation"] == job["metadata"]["generation"] + 1


QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def test_int_or_string_with_a_pattern_validates_quantities(api: ApiServerThread) -> None:
    # The form controller-gen (and respawn_operator.crdgen) emits for resource.Quantity.
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "quotas.test.respawn.dev"},
        "spec": {
            "group": "test.respawn.dev",
            "scope": "Namespaced",
            "names": {"plural": "quotas", "singular": "quota", "kind": "Quota"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "limits": {
                                            "type": "object",
                                            "additionalProperties": {
                                                "anyOf": [{"type": "integer"}, {"type": "string"}],
                                                "pattern": QUANTITY,
                                                "x-kubernetes-int-or-string": True,
                                            },
                                        }
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    api.create(crd)
    path = "/apis/test.respawn.dev/v1/namespaces/default/quotas"

    def post(name: str, limits: dict[str, Any]) -> tuple[int, Any]:
        return http(
            api,
            "POST",
            path,
            {
                "apiVersion": "test.respawn.dev/v1",
                "kind": "Quota",
                "metadata": {"name": name},
                "spec": {"limits": limits},
            },
        )

    status, body = post("good", {"cpu": 2, "mem": "4Gi", "m": "500m", "e": "1e3", "f": ".5", "neg": "-1"})
    assert status == 201 and body["spec"]["limits"]["cpu"] == 2 and body["spec"]["limits"]["mem"] == "4Gi"
    status, body = post("word", {"cpu": "lots"})
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.limits.cpu"
    assert "should match" in body["message"]
    for i, bad in enumerate(["4GB", "1.5.2", "", " 1", "2 Gi"]):
        status, _ = post(f"bad-{i}", {"mem": bad})
        assert status == 422, bad
    for i, wrong in enumerate([1.5, True, [1], {"v": 1}]):
        status, body = post(f"typed-{i}", {"mem": wrong})
        assert status == 422 and "must be of type integer,string" in body["message"], wrong


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"containers": {"name": "a", "image": "i"}}, "spec.containers"),
        ({"containers": []}, "spec.containers"),
        ({"containers": [{"name": "Bad_Name", "image": "i"}]}, "spec.containers[0].name"),
        ({"containers": [{"name": "a"}]}, "spec.containers[0].image"),
        (
            {"containers": [{"name": "a", "image": "i", "env": [{"name": "A=B", "value": "1"}]}]},
            "spec.containers[0].env[0].name",
        ),
        ({"containers": [{"name": "a", "image": "i", "command": "sh -c x"}]}, "spec.containers[0].command"),
        ({"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "j"}]}, "spec.containers[1].name"),
    ],
)
def test_pods_and_job_templates_the_real_server_refuses_are_refused(
    api: ApiServerThread, spec: dict[str, Any], field: str
) -> None:
    status, body = http(api, "POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}, "spec": spec})
    assert status == 422 and field in [c["field"] for c in body["details"]["causes"]], body
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {**spec, "restartPolicy": "Never"}}},
    }
    status, body = http(api, "POST", "/apis/batch/v1/namespaces/default/jobs", job)
    assert status == 422 and f"spec.template.{field}" in [c["field"] for c in body["details"]["causes"]], body

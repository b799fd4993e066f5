"""The emulator authenticates and authorizes like a real API server (respawn_local/apiauth.py)."""

from __future__ import annotations

from typing import Any

import pytest
from respawn_local.apiauth import RequestAttributes, UserInfo, authorize, rule_allows, service_account_user
from respawn_local.apiserver import ApiServerThread

from .helpers import http

PODS = "/api/v1/namespaces/default/pods"


def rbac(
    api: ApiServerThread,
    kind: str,
    name: str,
    rules: list[dict[str, Any]],
    sa: str,
    namespace: str | None = "default",
    sa_namespace: str = "default",
) -> None:
    """A (Cluster)Role and its binding to ServiceAccount `sa_namespace/sa`."""
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if kind == "Role" else {})}
    api.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules})
    binding_kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    bmeta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    api.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": binding_kind,
            "metadata": bmeta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_namespace}],
        }
    )


def test_no_token_or_a_wrong_one_is_401(api: ApiServerThread) -> None:
    assert http(api, "GET", PODS, token="")[0] == 401
    status, body = http(api, "GET", PODS, token="not-a-token")
    assert status == 401 and body["reason"] == "Unauthorized"
    assert http(api, "GET", PODS)[0] == 200  # the admin
    assert [d[2] for d in api.denials] == [401, 401]


def test_anonymous_when_allowed_is_judged_by_rbac() -> None:
    with ApiServerThread(allow_anonymous=True) as api:
        status, body = http(api, "GET", PODS, token="")
        assert status == 403
        assert body["message"] == (
            'pods is forbidden: User "system:anonymous" cannot list resource "pods" '
            'in API group "" in the namespace "default"'
        )


def test_service_account_token_sees_only_what_its_role_grants(api: ApiServerThread) -> None:
    api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})
    token = api.service_account_token("default", "reader")
    assert http(api, "GET", PODS, token=token)[0] == 403
    assert http(api, "GET", "/version", token=token)[0] == 200  # discovery is open to the authenticated
    rbac(api, "Role", "read-pods", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}], "reader")
    assert http(api, "GET", PODS, token=token)[0] == 200
    assert http(api, "GET", PODS + "?watch=true&timeoutSeconds=0", token=token)[0] == 403  # watch is not list
    assert http(api, "GET", "/api/v1/pods", token=token)[0] == 403  # a Role is not cluster-wide
    assert (
        http(
            api,
            "POST",
            PODS,
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            token=token,
        )[0]
        == 403
    )
    status, body = http(api, "GET", "/api/v1/namespaces/kube-system/pods", token=token)
    assert status == 403 and 'User "system:serviceaccount:default:reader"' in body["message"]


def test_token_request_needs_the_account_and_binds_to_a_live_pod(api: ApiServerThread) -> None:
    status, _ = http(api, "POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token", {"spec": {}})
    assert status == 404
    pod = api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
    status, answer = http(
        api,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod["metadata"]["uid"]}}},
    )
    assert status == 201 and answer["kind"] == "TokenRequest" and answer["status"]["expirationTimestamp"]
    token = answer["status"]["token"]
    assert http(api, "GET", "/version", token=token)[0] == 200
    api.delete("pods", "p", grace_period_seconds=0)
    assert http(api, "GET", "/version", token=token)[0] == 401  # a bound token dies with its pod
    status, _ = http(
        api, "POST", "/api/v1/namespaces/default/serviceaccounts/default/token", {"spec": {"expirationSeconds": 60}}
    )
    assert status == 422  # below the 10-minute minimum


def test_service_account_without_rights_cannot_ask_for_tokens(api: ApiServerThread) -> None:
    token = api.service_account_token("default", "default")
    status, _ = http(api, "POST", "/api/v1/namespaces/default/serviceaccounts/default/token", {"spec": {}}, token=token)
    assert status == 403


SA = service_account_user("team-a", "runner")


@pytest.mark.parametrize(
    ("rule", "attrs", "allowed"),
    [
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            RequestAttributes("get", "team-a", "", "pods"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            RequestAttributes("patch", "team-a", "", "pods"),
            False,
        ),
        (
            {"apiGroups": ["batch"], "resources": ["pods"], "verbs": ["get"]},
            RequestAttributes("get", "team-a", "", "pods"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            RequestAttributes("get", "team-a", "", "pods", "log"),
            False,
        ),  # a subresource is its own resource
        (
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            RequestAttributes("get", "team-a", "", "pods", "log"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]},
            RequestAttributes("patch", "team-a", "", "pods", "status"),
            True,
        ),
        (
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            RequestAttributes("delete", "team-a", "batch", "jobs", "", "j"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"], "resourceNames": ["mine"]},
            RequestAttributes("patch", "team-a", "", "pods", "", "mine"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"], "resourceNames": ["mine"]},
            RequestAttributes("patch", "team-a", "", "pods", "", "theirs"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"], "resourceNames": ["mine"]},
            RequestAttributes("list", "team-a", "", "pods"),
            False,
        ),  # a named rule never allows an unnamed request
    ],
)
def test_rule_matching(rule: dict[str, Any], attrs: RequestAttributes, allowed: bool) -> None:
    assert rule_allows(rule, attrs) is allowed


def test_bindings_by_scope_and_subject_kind() -> None:
    pods_get = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    store: dict[str, list[dict[str, Any]]] = {
        "clusterroles": [{"metadata": {"name": "pod-reader"}, "rules": pods_get}],
        "roles": [],
        "rolebindings": [
            {
                "metadata": {"name": "b", "namespace": "team-a"},
                "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team-a"}],
            }
        ],
        "clusterrolebindings": [],
    }

    def lookup(plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return [o for o in store[plural] if namespace is None or o["metadata"].get("namespace") == namespace]

    get_in = RequestAttributes("get", "team-a", "", "pods", "", "p")
    assert authorize(SA, get_in, lookup)  # a RoleBinding lends a ClusterRole inside its namespace
    assert not authorize(SA, RequestAttributes("get", "team-b", "", "pods", "", "p"), lookup)
    assert not authorize(service_account_user("team-b", "runner"), get_in, lookup)
    assert not authorize(SA, RequestAttributes("get", None, "", "pods"), lookup)
    assert authorize(
        UserInfo("admin", ("system:masters",)), RequestAttributes("delete", None, "", "nodes", "", "n"), lookup
    )

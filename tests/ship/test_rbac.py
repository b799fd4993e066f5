"""RBAC, checked as data: least privilege, no wildcards, and every call the operator makes is granted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import pytest
from respawn_local.testkit import RUNNER_RULES

from tests.ship.api_calls import Need, kopf_framework_needs, operator_needs
from tests.ship.chart_render import CHART_DIR, NAMESPACE, VALUE_SETS, Manifest, chart, find, render, runner_namespaces

SETS = sorted(VALUE_SETS)
ROLE_KINDS = ("Role", "ClusterRole")


def _roles(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.kind in ROLE_KINDS]


def _rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return list(role.get("rules") or [])


def _allows(rules: Iterable[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
        for r in rules
    )


def _bound_rules(manifests: list[Manifest], sa: str, sa_ns: str, namespace: str | None) -> list[dict[str, Any]]:
    """Rules ``sa`` holds in ``namespace`` (None: cluster scope), through any binding."""
    rules: list[dict[str, Any]] = []
    for binding in manifests:
        if binding.kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == sa_ns
            for s in binding.obj["subjects"]
        ):
            continue
        if binding.kind == "RoleBinding" and binding.namespace != namespace:
            continue
        ref = binding.obj["roleRef"]
        role_ns = binding.namespace if ref["kind"] == "Role" else None
        matches = [m for m in manifests if m.kind == ref["kind"] and m.name == ref["name"] and m.namespace == role_ns]
        assert len(matches) == 1, f"{binding.kind} {binding.name} refers to a missing {ref['kind']} {ref['name']}"
        rules += _rules(matches[0].obj)
    return rules


@pytest.mark.parametrize("name", SETS)
def test_no_wildcards_and_no_dangerous_grants(name: str) -> None:
    for role in _roles(render(VALUE_SETS[name])):
        for rule in _rules(role.obj):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{role.kind} {role.name}: wildcard in {key}: {rule}"
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
            if rule["resources"] == ["configmaps"]:
                # A fan-out's itemsFrom: one named ConfigMap of the run's own namespace, read, never listed
                # (the operator can create pods there, which could mount it anyway).
                assert rule["verbs"] == ["get"], rule
                continue
            assert not {
                "secrets",
                "configmaps",
                "serviceaccounts/token",
                "pods/exec",
                "roles",
                "clusterroles",
                "rolebindings",
                "clusterrolebindings",
            } & set(rule["resources"]), rule


def test_every_rule_in_the_templates_says_what_it_is_for() -> None:
    for path in sorted((CHART_DIR / "templates").glob("*")):
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if line.lstrip().startswith("- apiGroups:"):
                above = lines[n - 1].strip()
                assert above.startswith("#"), f"{path.name}:{n + 1}: rule without a comment above it"


@pytest.mark.parametrize("name", SETS)
def test_runner_role_is_pods_get_patch_in_each_runner_namespace(name: str) -> None:
    manifests = render(VALUE_SETS[name])
    values = chart().merge_values(VALUE_SETS[name])
    runner = values["runner"]
    sa_name = runner["serviceAccount"]["name"]
    for ns in runner_namespaces(values):
        assert find(manifests, "ServiceAccount", sa_name, ns)
        rules = _bound_rules(manifests, sa_name, ns, ns)
        assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
        assert rules == RUNNER_RULES  # the copy harnesses use without the chart (respawn_local.testkit)
        assert _bound_rules(manifests, sa_name, ns, None) == [], "runner pods need nothing cluster-wide"
    runner_sas = [m for m in find(manifests, "ServiceAccount") if m.name == sa_name]
    assert sorted(m.namespace or "" for m in runner_sas) == sorted(runner_namespaces(values))


def test_the_runtime_needs_only_what_the_runner_role_grants() -> None:
    import pipeline_runtime.reporting as reporting

    source = open(reporting.__file__).read()
    # The progress reporter talks to exactly one endpoint: its own pod.
    assert re.findall(r"/api/v1/namespaces/\{namespace\}/pods/\{name\}", source)
    methods = set(re.findall(r'method\s*=\s*"([A-Z]+)"|"(GET|PATCH|POST|PUT|DELETE)"', source))
    used = {m for pair in methods for m in pair if m}
    assert used <= {"GET", "PATCH"}, used


def test_operator_code_scan_finds_the_calls_we_know_of() -> None:
    """Guards the scanner itself: if it found nothing, the RBAC test below would prove nothing."""
    keys = {n.key() for n in operator_needs()}
    for known in [
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "nodes", "get"),
        ("respawn.dev", "pipelineruns", "get"),
        ("respawn.dev", "pipelineruns/status", "patch"),
        ("", "events", "create"),
        ("respawn.dev", "pipelineruns", "watch"),
        ("respawn.dev", "pipelineruns/finalizers", "update"),
        ("kopf.dev", "clusterkopfpeerings", "get"),
        ("kopf.dev", "kopfpeerings", "get"),
    ]:
        assert known in keys, known


@pytest.mark.parametrize("name", SETS)
def test_operator_is_granted_every_call_it_makes(name: str) -> None:
    manifests = render(VALUE_SETS[name])
    values = chart().merge_values(VALUE_SETS[name])
    watch = values["config"]["watchNamespaces"]
    clusterwide = not watch
    peering = values["operator"]["peering"]["enabled"]
    sa = next(s["name"] for b in find(manifests, "ClusterRoleBinding") for s in b.obj["subjects"])
    needs = operator_needs(clusterwide=clusterwide, peering=peering) + kopf_framework_needs(
        clusterwide=clusterwide, peering=peering
    )
    cluster_rules = _bound_rules(manifests, sa, NAMESPACE, None)
    missing: list[Need] = []
    for need in needs:
        if not need.namespaced or clusterwide:
            if not _allows(cluster_rules, need.group, need.resource, need.verb):
                missing.append(need)
            continue
        for ns in watch:
            if not _allows(
                cluster_rules + _bound_rules(manifests, sa, NAMESPACE, ns), need.group, need.resource, need.verb
            ):
                missing.append(need)
    assert not missing, "\n".join(f"{n.verb} {n.group or 'core'}/{n.resource}  ({n.why})" for n in missing)


@pytest.mark.parametrize("name", SETS)
def test_operator_is_granted_nothing_it_does_not_call(name: str) -> None:
    """Least privilege the other way round: every granted verb is one the code (or kopf) uses."""
    manifests = render(VALUE_SETS[name])
    values = chart().merge_values(VALUE_SETS[name])
    watch = values["config"]["watchNamespaces"]
    clusterwide, peering = not watch, values["operator"]["peering"]["enabled"]
    needs = operator_needs(clusterwide=clusterwide, peering=peering) + kopf_framework_needs(
        clusterwide=clusterwide, peering=peering
    )
    wanted = {n.key() for n in needs}
    operator_roles = [m for m in _roles(manifests) if m.name.endswith("-operator")]
    assert operator_roles
    for role in operator_roles:
        for rule in _rules(role.obj):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert (group, resource, verb) in wanted, (
                            f"{role.kind} {role.name} grants unused {verb} {group}/{resource}"
                        )


def test_namespaced_install_has_no_cluster_wide_namespaced_grants() -> None:
    manifests = render(VALUE_SETS["namespaced"])
    (cluster_role,) = find(manifests, "ClusterRole")
    resources = {res for rule in _rules(cluster_role.obj) for res in rule["resources"]}
    assert resources == {"customresourcedefinitions", "nodes", "namespaces"}
    roles = find(manifests, "Role")
    operator_roles = sorted(m.namespace or "" for m in roles if m.name.endswith("-operator"))
    assert operator_roles == ["team-a", "team-b"]


def test_rbac_create_false_renders_no_operator_rbac() -> None:
    manifests = render({"rbac": {"create": False}})
    assert not find(manifests, "ClusterRole") and not find(manifests, "ClusterRoleBinding")


def test_runner_namespaces_get_their_own_identity_never_a_shared_one() -> None:
    shared = {
        "runner": {
            "namespaces": ["team-a", "team-b"],
            "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "all@proj.iam.gserviceaccount.com"}},
        }
    }
    with pytest.raises(Exception, match="share one cloud identity"):
        render(shared)
    own = render(VALUE_SETS["namespaced"])
    identities = {
        m.namespace: m.obj["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        for m in find(own, "ServiceAccount", "respawn-runner")
    }
    assert identities == {
        "team-a": "team-a@proj.iam.gserviceaccount.com",
        "team-b": "team-b@proj.iam.gserviceaccount.com",
    }
    assert all(
        m.obj["metadata"]["annotations"]["example.com/owner"] == "data"
        for m in find(own, "ServiceAccount", "respawn-runner")
    )  # the shared ones still apply
    deployment = next(m.obj for m in own if m.kind == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES"]) == {
        "team-a": ["gs://respawn-checkpoints/runs/team-a"],
        "team-b": ["gs://respawn-checkpoints/runs/team-b"],
    }

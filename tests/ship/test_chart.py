"""The Helm chart: lints clean, renders valid Kubernetes 1.30 objects, rejects wrong values."""

from __future__ import annotations

import json
import os
from typing import Any

import helm_python as helm
import jsonschema
import kopf
import kubernetes_validate
import pytest
import yaml
from respawn_operator.config import OperatorConfig

from tests.ship import promql_check
from tests.ship.chart_render import (
    CHART_DIR,
    KUBE_VERSION,
    NAMESPACE,
    ROOT,
    VALUE_SETS,
    Manifest,
    chart,
    find,
    notes,
    one,
    render,
)
from tools import sync_chart

SETS = sorted(VALUE_SETS)


# --- lint and validity --------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_helm_lint_strict_is_clean(name: str) -> None:
    report = helm.lint(CHART_DIR, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    # severity: 1 info, 2 warning, 3 error; strict fails on warnings, so do we.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], problems


def _crd_schemas(manifests: list[Manifest]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every CRD the chart ships."""
    schemas = {}
    for m in find(manifests, "CustomResourceDefinition"):
        spec = m.obj["spec"]
        for version in spec["versions"]:
            schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"][
                "openAPIV3Schema"
            ]
    return schemas


@pytest.mark.parametrize("name", SETS)
def test_every_rendered_manifest_validates_strictly(name: str) -> None:
    manifests = render(VALUE_SETS[name])
    crd_schemas = _crd_schemas(manifests)
    checked = 0
    for m in manifests:
        gvk = (m.obj["apiVersion"], m.kind)
        if gvk in crd_schemas:  # our own custom resources (kopf peering objects)
            jsonschema.validate(
                {k: v for k, v in m.obj.items() if k not in ("apiVersion", "kind", "metadata")}, crd_schemas[gvk]
            )
        elif gvk == ("monitoring.coreos.com/v1", "ServiceMonitor"):
            _check_service_monitor(m.obj, manifests)  # no offline schema: check what it must point at
        elif gvk == ("monitoring.coreos.com/v1", "PrometheusRule"):
            assert promql_check.rule_problems(m.obj) == []  # no offline schema: structure and PromQL
        else:
            try:
                kubernetes_validate.validate(m.obj, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{m.source}: {m.kind}/{m.name}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked == len(manifests) > 5


def _check_service_monitor(sm: dict[str, Any], manifests: list[Manifest]) -> None:
    svc = one(manifests, "Service")
    labels = svc["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("name", SETS)
def test_names_are_unique_per_kind_and_namespace(name: str) -> None:
    keys = [(m.kind, m.namespace, m.name) for m in render(VALUE_SETS[name])]
    assert len(keys) == len(set(keys))


# --- CRDs -----------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_repo_crds() -> None:
    stale = sync_chart.stale_files()
    assert not stale, "run `.venv/bin/python -m tools.sync_chart`: " + "; ".join(stale)
    repo_crds = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart_crds = sorted(p.name for p in (CHART_DIR / "crds").glob("*.yaml"))
    assert repo_crds and set(repo_crds) <= set(chart_crds)
    assert set(chart_crds) - set(repo_crds) == sync_chart.CHART_ONLY_CRDS


def test_helm_installs_the_pipelinerun_crd_and_kopf_peering_crds() -> None:
    names = {m.name for m in find(render(), "CustomResourceDefinition")}
    assert names == {"pipelineruns.respawn.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def test_kopf_peering_crds_match_what_kopf_watches() -> None:
    from kopf._cogs.structs import references  # the selectors kopf's peering looks for

    crds = [m.obj["spec"] for m in find(render(), "CustomResourceDefinition")]
    resources = [
        references.Resource(
            group=s["group"],
            version=v["name"],
            plural=s["names"]["plural"],
            kind=s["names"]["kind"],
            namespaced=s["scope"] == "Namespaced",
        )
        for s in crds
        for v in s["versions"]
    ]
    for selector, namespaced in ((references.CLUSTER_PEERINGS_K, False), (references.NAMESPACED_PEERINGS_K, True)):
        matching = [r for r in resources if selector.check(r)]
        assert len(matching) == 1 and matching[0].namespaced is namespaced, selector


# --- values schema ----------------------------------------------------------------------

BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"replicaCount": 2},
    "typo in a nested key": {"operator": {"replica": 2}},
    "replicas as a string": {"operator": {"replicas": "2"}},
    "negative replicas": {"operator": {"replicas": -1}},
    "namespace not a DNS label": {"config": {"watchNamespaces": ["Team_A"]}},
    "namespaces as a string": {"config": {"watchNamespaces": "team-a,team-b"}},
    "duplicate namespaces": {"runner": {"namespaces": ["a", "a"]}},
    "checkpoint URI scheme": {"config": {"defaultCheckpointUri": "s3://bucket/x"}},
    "pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "empty repository": {"image": {"repository": ""}},
    "digest format": {"image": {"digest": "latest"}},
    "pipeline image digest format": {"pipelineImage": {"digest": "latest"}},
    "pipeline image tag with a colon": {"pipelineImage": {"tag": "a:b"}},
    "port out of range": {"metrics": {"port": 70000}},
    "service type": {"metrics": {"service": {"type": "Ingress"}}},
    "peering flag type": {"operator": {"peering": {"enabled": "yes"}}},
    "interval format": {"metrics": {"serviceMonitor": {"interval": "often"}}},
    "resource quantity": {"operator": {"resources": {"limits": {"memory": "lots"}}}},
    "resource name typo": {"operator": {"resources": {"limit": {"memory": "1Gi"}}}},
    "extraEnv without name": {"config": {"extraEnv": [{"value": "x"}]}},
    "probe path": {"operator": {"health": {"path": "healthz"}}},
    "grace period zero": {"config": {"terminationGraceSeconds": 0}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_values_schema_rejects(case: str) -> None:
    with pytest.raises(helm.HelmError):
        chart().validate_schema(chart().merge_values(BAD_VALUES[case]))
    with pytest.raises(helm.HelmError):  # and so does `helm install`
        chart().render(BAD_VALUES[case], name="respawn", namespace=NAMESPACE)


@pytest.mark.parametrize("name", SETS)
def test_values_schema_accepts_every_documented_value_set(name: str) -> None:
    chart().validate_schema(chart().merge_values(VALUE_SETS[name]))


def test_values_yaml_defaults_pass_the_schema_and_cover_it() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    assert set(schema["properties"]) - {"global"} == set(defaults)


def test_several_replicas_without_peering_refuse_to_render() -> None:
    with pytest.raises(helm.HelmError, match="peering"):
        chart().render({"operator": {"replicas": 2}}, name="respawn", namespace=NAMESPACE)


# --- the operator Deployment --------------------------------------------------------------


def _container(manifests: list[Manifest]) -> dict[str, Any]:
    c: dict[str, Any]
    (c,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("name", SETS)
def test_operator_pod_is_locked_down(name: str) -> None:
    manifests = render(VALUE_SETS[name])
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    c = _container(manifests)
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # HOME and TMPDIR of the image are /tmp: it must be writable.
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def _run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, Any]:
    """Run respawn-operator's real argument handling with these args and env; capture kopf.run's call."""
    from respawn_operator import cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: calls.append(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    for key in [k for k in os.environ if k.startswith("RESPAWN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(args) == 0
    (call,) = calls
    return call


@pytest.mark.parametrize("name", SETS)
def test_operator_command_line_is_what_respawn_operator_accepts(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(VALUE_SETS[name])
    c = _container(manifests)
    assert "command" not in c, "the image's ENTRYPOINT (tini) must stay PID 1"
    assert c["args"][0] == "respawn-operator"
    call = _run_cli(c["args"][1:], monkeypatch, _env(c))
    values = chart().merge_values(VALUE_SETS[name])
    health = values["operator"]["health"]
    assert call["liveness_endpoint"] == f"http://0.0.0.0:{health['port']}{health['path']}"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["path"] == health["path"]
        assert probe["httpGet"]["port"] in {p["name"] for p in c["ports"] if p["containerPort"] == health["port"]}
    watch = values["config"]["watchNamespaces"]
    assert call["clusterwide"] is (not watch) and list(call["namespaces"]) == watch
    if values["operator"]["peering"]["enabled"]:
        assert call["peering_name"] == values["operator"]["peering"]["name"] and call["standalone"] is False
    else:
        assert call["standalone"] is True
    # The peering gate of the operator's own loops judges as kopf does: same identity, priority, object.
    gate = call["memo"].settings
    assert call["identity"] and gate.identity == call["identity"] and gate.priority == call["priority"]
    assert gate.peering == (call["peering_name"] if call["standalone"] is False else None)
    assert gate.clusterwide is call["clusterwide"] and list(gate.namespaces) == list(call["namespaces"])


@pytest.mark.parametrize("name", SETS)
def test_operator_env_is_read_by_operator_config(name: str) -> None:
    manifests = render(VALUE_SETS[name])
    values = chart().merge_values(VALUE_SETS[name])
    c = _container(manifests)
    env = _env(c)
    assert all(k.startswith("RESPAWN_") or k == "POD_ID" for k in env)
    cfg = OperatorConfig.from_env(env)
    pipeline = values["pipelineImage"]
    tag = pipeline["tag"] or values["image"]["tag"] or chart().metadata["appVersion"]
    reference = (
        f"{pipeline['repository']}@{pipeline['digest']}" if pipeline["digest"] else f"{pipeline['repository']}:{tag}"
    )
    assert cfg.default_image == (values["config"]["defaultImage"] or reference)
    assert cfg.default_image != c["image"], "pipeline pods run the pipeline image, not the operator's"
    assert cfg.default_checkpoint_uri == (values["config"]["defaultCheckpointUri"] or None)
    assert list(cfg.namespaces) == values["config"]["watchNamespaces"]
    assert cfg.termination_grace_seconds == values["config"]["terminationGraceSeconds"]
    runner = values["runner"]
    expected_sa = runner["serviceAccount"]["name"] if runner["namespaces"] and runner["setAsDefault"] else None
    assert cfg.default_service_account == expected_sa
    if values["metrics"]["enabled"]:
        assert cfg.metrics_port == values["metrics"]["port"]
        port = next(p for p in c["ports"] if p["name"] == "metrics")
        assert port["containerPort"] == cfg.metrics_port
        svc = one(manifests, "Service")
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
        pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    else:
        assert cfg.metrics_port == 0 and not find(manifests, "Service")


def test_image_references_follow_tag_digest_and_app_version() -> None:
    def images(values: dict[str, Any]) -> tuple[str, str]:
        """(the operator's image, the pipeline pods' default image)."""
        c = _container(render(values))
        return c["image"], _env(c)["RESPAWN_DEFAULT_IMAGE"]

    version = chart().metadata["appVersion"]
    assert images({}) == (f"ghcr.io/example/respawn-operator:{version}", f"ghcr.io/example/respawn-pipeline:{version}")
    # One --set image.tag moves both: they come from one build.
    assert images(VALUE_SETS["customised"]) == (
        "registry.example.com:5000/respawn-operator:0.2.0-rc.1",
        "registry.example.com:5000/respawn-pipeline:0.2.0-rc.1",
    )
    assert images(VALUE_SETS["standby-namespaced"]) == (
        "ghcr.io/example/respawn-operator@sha256:" + "a" * 64,
        "ghcr.io/example/respawn-pipeline@sha256:" + "b" * 64,
    )
    assert images({"image": {"tag": "1.0"}, "pipelineImage": {"tag": "1.0-gpu"}})[1] == (
        "ghcr.io/example/respawn-pipeline:1.0-gpu"
    )
    # config.defaultImage, a whole reference, wins (the chart's only image value before pipelineImage).
    assert images(VALUE_SETS["namespaced"])[1] == "registry.example.com/pipelines/dataprep:1.2.3"


def test_standby_replicas_share_a_peering_object_and_never_surge_without_it() -> None:
    solo = one(render(), "Deployment")
    assert solo["spec"]["strategy"]["type"] == "Recreate" and solo["spec"]["replicas"] == 1
    assert not find(render(), "ClusterKopfPeering") and not find(render(), "KopfPeering")
    clusterwide = render(VALUE_SETS["standby-clusterwide"])
    assert one(clusterwide, "Deployment")["spec"]["replicas"] == 2
    assert one(clusterwide, "ClusterKopfPeering")["metadata"]["name"] == "respawn"
    namespaced = render(VALUE_SETS["standby-namespaced"])
    peerings = find(namespaced, "KopfPeering")
    assert [(m.namespace, m.name) for m in peerings] == [("pipelines", "respawn-peers")]


def test_argocd_health_configmap_carries_the_lua_check_verbatim() -> None:
    cm = one(render(VALUE_SETS["standby-clusterwide"]), "ConfigMap")
    assert cm["metadata"]["namespace"] == "argocd"
    lua = (ROOT / "argocd" / "health-pipelinerun.lua").read_text()
    assert cm["data"] == {"resource.customizations.health.respawn.dev_PipelineRun": lua}
    assert not find(render(), "ConfigMap")


def test_notes_name_the_namespaces_and_the_crd_upgrade_step() -> None:
    text = notes(VALUE_SETS["namespaced"])
    assert "team-a, team-b" in text and "kubectl apply --server-side -f charts/respawn/crds/" in text
    assert "all namespaces" in notes()


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    opaque = {
        "operator.resources",
        "operator.podSecurityContext",
        "operator.securityContext",
        "operator.livenessProbe",
        "operator.readinessProbe",
        "dashboards.labels",
    }
    keys = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in opaque:
            keys += _leaf_keys(value, path)
        else:
            keys.append(path)
    return keys


def test_install_docs_explain_every_value_and_the_crd_sync() -> None:
    docs = (ROOT / "docs" / "install.md").read_text()
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = [k for k in _leaf_keys(defaults) if f"`{k}`" not in docs]
    assert not missing, f"docs/install.md does not explain: {missing}"
    assert "python -m tools.sync_chart" in docs and "Helm never upgrades CRDs" in docs

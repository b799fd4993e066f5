"""Render charts/respawn offline with helm-python-sdk (Helm's own Go code, no binary, no cluster)."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "respawn"
RELEASE = "respawn"
NAMESPACE = "respawn-system"
KUBE_VERSION = "1.30.0"


@dataclass(frozen=True)
class Manifest:
    """One rendered object and the template (or CRD file) it came from."""

    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        namespace = self.obj["metadata"].get("namespace")
        return None if namespace is None else str(namespace)


# Value sets the tests render: each is a way people install the chart.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {
        "config": {
            "watchNamespaces": ["team-a", "team-b"],
            "defaultCheckpointUri": "gs://respawn-checkpoints/runs",
            "defaultImage": "registry.example.com/pipelines/dataprep:1.2.3",
        },
        "runner": {
            "namespaces": [
                {
                    "name": "team-a",
                    "checkpointPrefixes": ["gs://respawn-checkpoints/runs/team-a"],
                    "serviceAccountAnnotations": {
                        "iam.gke.io/gcp-service-account": "team-a@proj.iam.gserviceaccount.com"
                    },
                },
                {
                    "name": "team-b",
                    "checkpointPrefixes": ["gs://respawn-checkpoints/runs/team-b"],
                    "serviceAccountAnnotations": {
                        "iam.gke.io/gcp-service-account": "team-b@proj.iam.gserviceaccount.com"
                    },
                },
            ],
            "serviceAccount": {"name": "respawn-runner", "annotations": {"example.com/owner": "data"}},
        },
    },
    "standby-clusterwide": {
        "operator": {"replicas": 2, "peering": {"enabled": True, "name": "respawn"}},
        "config": {"defaultCheckpointUri": "file:///checkpoints", "verbose": True},
        "runner": {"namespaces": ["default"]},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "argocd": {"healthCheck": {"enabled": True, "namespace": "argocd"}},
    },
    "standby-namespaced": {
        "image": {"digest": "sha256:" + "a" * 64},
        "pipelineImage": {"digest": "sha256:" + "b" * 64},
        "operator": {"replicas": 2, "peering": {"enabled": True, "name": "respawn-peers"}},
        "config": {"watchNamespaces": ["pipelines"]},
        "serviceAccount": {"create": False, "name": "existing-operator-sa"},
        "metrics": {"enabled": False},
    },
    "observability": {
        "dashboards": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Respawn"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "customised": {
        "fullnameOverride": "rsp",
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {
            "repository": "registry.example.com:5000/respawn-operator",
            "tag": "0.2.0-rc.1",
            "pullPolicy": "Always",
        },
        "pipelineImage": {"repository": "registry.example.com:5000/respawn-pipeline"},
        "config": {
            "terminationGraceSeconds": 25,
            "extraEnv": [{"name": "RESPAWN_RESYNC_SECONDS", "value": "30"}],
        },
        "operator": {
            "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"}]}
                        ]
                    }
                }
            },
            "podAnnotations": {"example.com/team": "data"},
            "podLabels": {"team": "data"},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        },
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "op@proj.iam.gserviceaccount.com"}},
        "runner": {"namespaces": ["ml"], "setAsDefault": False},
        "rbac": {"create": True},
    },
}


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    """The chart, loaded once per test session (a handle into Helm's Go library)."""
    return helm.Chart.load(CHART_DIR)


@functools.cache
def _render_cached(values_yaml: str) -> tuple[Manifest, ...]:
    values = yaml.safe_load(values_yaml)
    rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out = []
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(Manifest(source, doc))
    for crd in chart().crds:  # what `helm install` (and `helm template --include-crds`) applies first
        for doc in yaml.safe_load_all(crd["data"]):
            if doc:
                out.append(Manifest(f"crds/{Path(crd['filename']).name}", doc))
    return tuple(out)


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every object `helm install` would create with ``values``, CRDs included."""
    values = copy.deepcopy(values or {})
    return list(_render_cached(yaml.safe_dump(values)))


def notes(values: dict[str, Any] | None = None) -> str:
    rendered = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for source, text in rendered.items() if source.endswith("NOTES.txt"))


def runner_namespaces(values: dict[str, Any]) -> list[str]:
    """The names in runner.namespaces (entries are names or {name, ...} objects)."""
    return [e["name"] if isinstance(e, dict) else e for e in values["runner"]["namespaces"]]


def find(manifests: list[Manifest], kind: str, name: str | None = None, namespace: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m.kind == kind and (name is None or m.name == name) and (namespace is None or m.namespace == namespace)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[m.name for m in found]}"
    return found[0].obj

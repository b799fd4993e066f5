"""examples/argocd/: the Applications parse, point at real paths, and order CRDs before runs."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.ship.chart_render import chart, runner_namespaces

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "argocd"
REPO_PATH_PREFIX = "https://github.com/example/respawn"


def _apps() -> dict[str, dict[str, Any]]:
    apps = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, f"{path.name}: one Application per file"
        apps[path.name] = docs[0]
    return apps


def _globs(include: str) -> list[str]:
    """Argo CD's include patterns: a glob, or ``{a,b}`` alternatives."""
    m = re.fullmatch(r"\{(.*)\}", include)
    return m.group(1).split(",") if m else [include]


def _synced_files(app: dict[str, Any]) -> list[Path]:
    source = app["spec"]["source"]
    base = ROOT / source["path"]
    directory = source.get("directory") or {}
    assert not directory.get("recurse"), "the examples keep to one directory level"
    patterns = _globs(directory.get("include", "*"))
    return sorted(
        p
        for p in base.iterdir()
        if p.is_file()
        and p.suffix in (".yaml", ".yml", ".json")
        and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    )


def _wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_every_example_is_an_argo_cd_application_from_this_repo() -> None:
    apps = _apps()
    assert set(apps) == {"respawn.yaml", "pipelineruns.yaml", "root.yaml"}
    for name, app in apps.items():
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application"), name
        spec = app["spec"]
        assert spec["project"] and spec["destination"]["server"] and spec["destination"]["namespace"]
        source = spec["source"]
        assert source["repoURL"].startswith(REPO_PATH_PREFIX) and source["targetRevision"]
        assert (ROOT / source["path"]).is_dir(), f"{name}: {source['path']} does not exist in the repo"
        for option in spec.get("syncPolicy", {}).get("syncOptions", []):
            assert re.fullmatch(r"[A-Za-z]+=(true|false|[a-z]+)", option), option


def test_chart_application_installs_charts_respawn_with_values_the_schema_accepts() -> None:
    app = _apps()["respawn.yaml"]
    source = app["spec"]["source"]
    assert source["path"] == "charts/respawn" and (ROOT / source["path"] / "Chart.yaml").is_file()
    values = source["helm"]["valuesObject"]
    chart().validate_schema(chart().merge_values(values))
    rendered = chart().render(
        values, name=source["helm"]["releaseName"], namespace=app["spec"]["destination"]["namespace"]
    )
    assert any("Deployment" in text for text in rendered.values())
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_runs_application_syncs_only_pipelineruns_that_pass_the_crd_schema() -> None:
    app = _apps()["pipelineruns.yaml"]
    files = _synced_files(app)
    assert files, "the include pattern matches no manifest in examples/"
    crd = yaml.safe_load((ROOT / "crds" / "pipelineruns.respawn.dev.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = version["schema"]["openAPIV3Schema"]
    for path in files:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert (doc["apiVersion"], doc["kind"]) == (f"{crd['spec']['group']}/{version['name']}", "PipelineRun"), (
                path.name
            )
            assert "namespace" not in doc["metadata"], f"{path.name}: the Application chooses the namespace"
            jsonschema.validate({k: v for k, v in doc.items() if k in ("spec",)}, schema)


def test_runs_come_after_the_crds_and_tolerate_a_missing_crd_on_first_sync() -> None:
    apps = _apps()
    chart_app, runs_app = apps["respawn.yaml"], apps["pipelineruns.yaml"]
    assert _wave(chart_app) < _wave(runs_app)
    assert "SkipDryRunOnMissingResource=true" in runs_app["spec"]["syncPolicy"]["syncOptions"]
    # The root app-of-apps is what makes the waves apply: it must create exactly these two.
    root = apps["root.yaml"]
    assert [p.name for p in _synced_files(root)] == ["pipelineruns.yaml", "respawn.yaml"]


def test_runs_land_where_the_chart_made_their_service_account() -> None:
    apps = _apps()
    values = chart().merge_values(apps["respawn.yaml"]["spec"]["source"]["helm"]["valuesObject"])
    runner = values["runner"]
    namespace = apps["pipelineruns.yaml"]["spec"]["destination"]["namespace"]
    assert namespace in runner_namespaces(values)
    for path in _synced_files(apps["pipelineruns.yaml"]):
        doc = yaml.safe_load(path.read_text())
        sa = doc["spec"].get("serviceAccountName")
        assert sa in (None, runner["serviceAccount"]["name"]), (
            f"{path.name} runs as {sa}, which the chart does not create"
        )


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        ("*-run.yaml", "dataprep-run.yaml", True),
        ("{a.yaml,b.yaml}", "b.yaml", True),
        ("{a.yaml,b.yaml}", "c.yaml", False),
    ],
)
def test_include_pattern_reader(pattern: str, name: str, expected: bool) -> None:
    assert any(fnmatch.fnmatch(name, p) for p in _globs(pattern)) is expected

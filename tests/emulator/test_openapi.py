"""OpenAPI v3 from the installed CRDs: `kubectl explain` (v1.32) works against the emulator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from respawn_local.apiserver import ApiServerThread

from .helpers import http

Kubectl = Callable[..., Any]
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "pipelineruns.respawn.dev.yaml"


@pytest.fixture
def pipelinerun_crd(api: ApiServerThread) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    api.create(crd)
    return crd


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def change_spec_description(api: ApiServerThread, description: str) -> None:
    crd = copy.deepcopy(api.get("customresourcedefinitions", "pipelineruns.respawn.dev", namespace=None))
    spec_schema(crd)["description"] = description
    api.replace("customresourcedefinitions", "pipelineruns.respawn.dev", crd, namespace=None)


def words(text: str) -> str:
    """`text` with its whitespace made single spaces (kubectl wraps descriptions at ~76 columns)."""
    return " ".join(text.split())


def test_explain_spec_shows_the_crd_descriptions(kubectl: Kubectl, pipelinerun_crd: dict[str, Any]) -> None:
    out = kubectl("explain", "pipelinerun.spec").stdout
    assert out.startswith("GROUP:      respawn.dev\nKIND:       PipelineRun\nVERSION:    v1alpha1\n")
    assert "FIELD: spec <Object>" in out
    spec = spec_schema(pipelinerun_crd)
    for text in (spec["description"], spec["properties"]["foreach"]["description"]):
        assert words(text) in words(out)
    assert words(spec["properties"]["checkpoint"]["description"]) in words(out)
    assert "pipeline\t<string> -required-" in out


def test_explain_follows_nested_fields_and_recursive(kubectl: Kubectl, pipelinerun_crd: dict[str, Any]) -> None:
    foreach = spec_schema(pipelinerun_crd)["properties"]["foreach"]
    out = kubectl("explain", "pipelinerun.spec.foreach").stdout
    assert "FIELD: foreach <Object>" in out
    assert words(foreach["properties"]["param"]["description"]) in words(out)
    assert "param\t<string> -required-" in out

    tree = kubectl("explain", "pipelineruns", "--recursive").stdout
    assert "  metadata\t<ObjectMeta>\n" in tree  # the ObjectMeta $ref, as a real server publishes it
    assert "      uid\t<string> -required-\n" in tree  # metadata.ownerReferences[].uid
    assert "    foreach\t<Object>\n      items\t<[]string>\n" in tree
    assert "  status\t<Object>\n" in tree

    meta = kubectl("explain", "prun.metadata.labels").stdout
    assert "FIELD: labels <map[string]string>" in meta and "Map of string keys and values" in meta

    missing = kubectl("explain", "pipelinerun.spec.nosuch", check=False)
    assert missing.returncode != 0 and 'field "nosuch" does not exist' in missing.stderr


def test_openapi_documents_and_their_hash(api: ApiServerThread, pipelinerun_crd: dict[str, Any]) -> None:
    status, index = http(api, "GET", "/openapi/v3")
    assert status == 200
    url = index["paths"]["apis/respawn.dev/v1alpha1"]["serverRelativeURL"]
    status, doc = http(api, "GET", url)
    assert status == 200
    schema = doc["components"]["schemas"]["dev.respawn.v1alpha1.PipelineRun"]
    gvk = {"group": "respawn.dev", "version": "v1alpha1", "kind": "PipelineRun"}
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in doc["components"]["schemas"]
    ops = doc["paths"]["/apis/respawn.dev/v1alpha1/namespaces/{namespace}/pipelineruns/{name}"]
    assert ops["patch"]["x-kubernetes-group-version-kind"] == gvk
    assert "fieldValidation" in {p["name"] for p in ops["patch"]["parameters"]}
    # Built-ins keep their operations (kubectl's field-validation check) and publish no schema.
    assert http(api, "GET", "/openapi/v3/api/v1")[1]["components"]["schemas"] == {}
    assert http(api, "GET", "/openapi/v3/apis/respawn.dev/v2")[0] == 404

    # A changed CRD is a new document under a new hash, so kubectl's cache does not serve the old one.
    change_spec_description(api, "Changed for the test.")
    changed = http(api, "GET", "/openapi/v3")[1]["paths"]["apis/respawn.dev/v1alpha1"]["serverRelativeURL"]
    assert changed != url
    spec = http(api, "GET", changed)[1]["components"]["schemas"]["dev.respawn.v1alpha1.PipelineRun"]
    assert spec["properties"]["spec"]["description"] == "Changed for the test."


def test_explain_sees_a_changed_crd(kubectl: Kubectl, api: ApiServerThread, pipelinerun_crd: dict[str, Any]) -> None:
    assert words(spec_schema(pipelinerun_crd)["description"]) in words(kubectl("explain", "prun.spec").stdout)
    change_spec_description(api, "Changed for the test.")
    assert "Changed for the test." in kubectl("explain", "prun.spec").stdout  # same --cache-dir

"""The checked-in CRD is generated from the pydantic models and stays structural."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from respawn_operator import crdgen
from respawn_operator.spec import SpecError, parse_spec


def test_checked_in_crd_matches_generator() -> None:
    assert crdgen.CRD_PATH.read_text() == crdgen.render(), (
        "crds/ drifted from respawn_operator/spec.py: run python -m respawn_operator.crdgen --write"
    )


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural (no type, refs, anyOf)."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "$ref" in node or "anyOf" in node or "allOf" in node:
            bad.append(path)
        if "properties" in node or "items" in node:
            if "type" not in node:
                bad.append(path)
        for key, sub in node.get("properties", {}).items():
            if "type" not in sub and not sub.get("x-kubernetes-preserve-unknown-fields"):
                bad.append(f"{path}.{key}")
            bad += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            bad += _walk(node["items"], f"{path}[]")
    return bad


def test_schema_is_structural_with_enums_minimums_and_required() -> None:
    crd = yaml.safe_load(crdgen.CRD_PATH.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["pipeline"]
    assert spec["properties"]["checkpoint"]["properties"]["retain"]["enum"] == ["Always", "OnFailure", "Never"]
    assert spec["properties"]["budgets"]["properties"]["maxFailures"]["minimum"] == 0
    assert spec["properties"]["params"]["x-kubernetes-preserve-unknown-fields"] is True
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Phase", "Step", "Current", "Preemptions", "Failures", "Age",
    ]
    assert crd["spec"]["names"]["shortNames"] == ["prun", "pruns"]
    assert crd["spec"]["names"]["categories"] == ["respawn"]


def test_crd_passes_kubernetes_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    crd = yaml.safe_load(crdgen.CRD_PATH.read_text())
    kv.validate(crd, "1.30", strict=True)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"pipeline": "x:Y", "budgets": {"backoff": {"initialSeconds": 60, "maxSeconds": 5}}}, "maxSeconds"),
        ({"pipeline": "x:Y", "env": [{"name": "RESPAWN_ATTEMPT", "value": "9"}]}, "RESPAWN_"),
        ({"pipeline": "x:Y", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "twice"),
        ({"pipeline": "not a name"}, "spec.pipeline"),
        ({"pipeline": "x:Y", "rerunFrom": "crop-frames"}, "spec.rerunFrom"),
    ],
)
def test_invalid_spec_message_says_what_to_fix(spec: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_spec(spec)


def test_examples_parse() -> None:
    root = pathlib.Path(__file__).resolve().parents[2] / "examples"
    runs = [
        doc
        for path in sorted(root.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "PipelineRun"
    ]
    assert runs, "examples/ holds no PipelineRun"
    for doc in runs:
        parse_spec(doc["spec"])

"""The checked-in CRD is generated from the pydantic models and stays structural."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml
from respawn_operator import crdgen
from respawn_operator.spec import SpecError, parse_spec


def test_checked_in_crd_matches_generator() -> None:
    assert crdgen.CRD_PATH.read_text() == crdgen.render(), (
        "crds/ drifted from respawn_operator/spec.py: run python -m respawn_operator.crdgen --write"
    )


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural (no type, refs, anyOf).

    The one anyOf allowed is Kubernetes' int-or-string form (quantities)."""
    bad: list[str] = []
    if isinstance(node, dict):
        int_or_string = (
            node.get("x-kubernetes-int-or-string") is True
            and "type" not in node
            and (node.get("anyOf") == [{"type": "integer"}, {"type": "string"}])
        )
        if "$ref" in node or ("anyOf" in node and not int_or_string) or "allOf" in node:
            bad.append(path)
        if ("properties" in node or "items" in node) and "type" not in node:
            bad.append(path)
        if isinstance(node.get("additionalProperties"), dict):
            bad += _walk(node["additionalProperties"], f"{path}{{}}")
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
        "Phase",
        "Items",
        "Step",
        "Current",
        "Preemptions",
        "Failures",
        "Age",
    ]
    assert crd["spec"]["names"]["shortNames"] == ["prun", "pruns"]
    assert crd["spec"]["names"]["categories"] == ["respawn"]


def test_crd_passes_kubernetes_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    crd = yaml.safe_load(crdgen.CRD_PATH.read_text())
    kv.validate(crd, "1.30", strict=True)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"pipeline": "x:Y", "budgets": {"backoff": {"initialSeconds": 60, "maxSeconds": 5}}}, "maxSeconds"),
        ({"pipeline": "x:Y", "env": [{"name": "RESPAWN_ATTEMPT", "value": "9"}]}, "RESPAWN_"),
        ({"pipeline": "x:Y", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "twice"),
        ({"pipeline": "not a name"}, "spec.pipeline"),
        ({"pipeline": "x:Y", "rerunFrom": "crop-frames"}, "spec.rerunFrom"),
        ({"pipeline": "x:Y", "params": {"text": "x" * 200_000}}, r"spec.params is 195 KiB .*limit of 100 KiB.*URI"),
        ({"pipeline": "x:Y", "resources": {"limits": {"cpu": "lots"}}}, r"spec.resources.limits.cpu"),
        ({"pipeline": "x:Y", "resources": {"requests": {"memory": 1.5}}}, r"spec.resources.requests.memory"),
        ({"pipeline": "x:Y", "serviceAccountName": "Bad_Name!"}, "spec.serviceAccountName"),
        ({"pipeline": "x:Y", "serviceAccountName": "a" * 254}, "spec.serviceAccountName"),
        ({"pipeline": "x:Y", "checkpoint": {"uri": "memory://x"}}, "spec.checkpoint.uri"),  # one process only
        ({"pipeline": "x:Y", "params": {"a": _nested(3000)}}, "nested too deeply"),
        ({"pipeline": "x:Y", "checkpoint": {"progressIntervalSeconds": -1}}, "spec.checkpoint.progressIntervalSeconds"),
        (
            {"pipeline": "x:Y", "checkpoint": {"progressIntervalSeconds": 86400}},
            "spec.checkpoint.progressIntervalSeconds",
        ),
    ],
)
def test_invalid_spec_message_says_what_to_fix(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_spec(spec)


def test_params_limit_and_quantities_that_pass() -> None:
    from respawn_operator.spec import PARAMS_MAX_BYTES

    spec = parse_spec(
        {
            "pipeline": "x:Y",
            "params": {"t": "x" * (PARAMS_MAX_BYTES - 10)},
            "serviceAccountName": "runner.team-a",
            "resources": {
                "limits": {"cpu": 2, "memory": "8Gi", "nvidia.com/gpu": "1"},
                "requests": {"cpu": "500m", "memory": "1e9", "ephemeral-storage": ".5Ti"},
                "claims": [{"name": "gpu"}],
            },
        }
    )
    assert spec.resources is not None
    assert spec.resources.model_dump(by_alias=True, exclude_none=True)["claims"] == [{"name": "gpu"}]


def test_quantity_schema_is_kubernetes_int_or_string() -> None:
    from respawn_operator.spec import QUANTITY_PATTERN

    crd = yaml.safe_load(crdgen.CRD_PATH.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for key in ("limits", "requests"):
        values = spec["properties"]["resources"]["properties"][key]["additionalProperties"]
        assert values == {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    sa = spec["properties"]["serviceAccountName"]
    assert sa["maxLength"] == 253 and sa["pattern"].startswith("^[a-z0-9]")


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

"""Generate the PipelineRun CRD from the pydantic models in :mod:`respawn_operator.spec`.

    python -m respawn_operator.crdgen            # print the CRD YAML
    python -m respawn_operator.crdgen --write    # write crds/pipelineruns.respawn.dev.yaml
    python -m respawn_operator.crdgen --check    # exit 1 if the checked-in file drifted

Pydantic emits JSON Schema with ``$ref``, ``anyOf`` for optionals and titles; a CRD
needs a *structural* OpenAPI v3 schema: every node typed, no references, ``nullable``
instead of ``anyOf [.., null]``, and ``x-kubernetes-preserve-unknown-fields`` where we
deliberately accept free-form objects (params, podTemplate, affinity, ...).
"""

from __future__ import annotations

import argparse
import enum
import pathlib
import sys
from typing import Any, cast

import yaml

from respawn_operator import GROUP, KIND, PLURAL, SINGULAR, VERSION
from respawn_operator.spec import PipelineRunSpec, PipelineRunStatus

CRD_PATH = pathlib.Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"
_DROP = {"title", "default"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inline references and rewrite one pydantic JSON-schema node into structural form."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if node.get("x-kubernetes-int-or-string"):
        # The one anyOf a structural schema allows: integer or string (quantities).
        out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP and k != "anyOf"}
        return {"anyOf": [{"type": "integer"}, {"type": "string"}], **out}
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [a for a in any_of if a.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            out = _structural({**non_null[0], **rest}, defs)
            out["nullable"] = True
            return out
        raise ValueError(f"cannot express anyOf {any_of} structurally")
    out = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "additionalProperties" and value is True:
            continue  # "extra=allow" models: preserve-unknown-fields below says the same.
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "additionalProperties" in out and out["additionalProperties"] is False:
        del out["additionalProperties"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def openapi_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the v1alpha1 version."""
    spec = _schema_of(PipelineRunSpec)
    status = _schema_of(PipelineRunStatus)
    status.pop("required", None)
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": ["prun", "pruns"],
                "categories": ["respawn"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Items",
                            "type": "string",
                            "jsonPath": ".status.items.progress",
                            "description": "A fan-out's items succeeded/total",
                        },
                        {"name": "Running", "type": "integer", "jsonPath": ".status.items.running", "priority": 1},
                        {"name": "Failed", "type": "integer", "jsonPath": ".status.items.failed", "priority": 1},
                        {
                            "name": "Step",
                            "type": "string",
                            "jsonPath": ".status.progress",
                            "description": "completedSteps/totalSteps",
                        },
                        {"name": "Current", "type": "string", "jsonPath": ".status.currentStep"},
                        {"name": "Preemptions", "type": "integer", "jsonPath": ".status.preemptions"},
                        {"name": "Failures", "type": "integer", "jsonPath": ".status.failures"},
                        {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1},
                        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no type stubs
    pass


_Dumper.add_multi_representer(enum.Enum, lambda dumper, data: dumper.represent_data(data.value))


def render() -> str:
    """The CRD as YAML text, exactly as checked in."""
    header = (
        "# Generated by `python -m respawn_operator.crdgen --write` from respawn_operator/spec.py.\n"
        "# Do not edit by hand: tests/operator/test_op_crd.py fails when this file drifts.\n"
    )
    return header + cast(str, yaml.dump(build_crd(), Dumper=_Dumper, sort_keys=False, width=100))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m respawn_operator.crdgen", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {CRD_PATH.name} into crds/")
    group.add_argument("--check", action="store_true", help="exit 1 if the checked-in CRD differs")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        CRD_PATH.parent.mkdir(parents=True, exist_ok=True)
        CRD_PATH.write_text(text)
        print(f"wrote {CRD_PATH}", file=sys.stderr)
    elif args.check:
        if not CRD_PATH.exists() or CRD_PATH.read_text() != text:
            print(f"{CRD_PATH} is stale: run python -m respawn_operator.crdgen --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CRD structural schemas: validation, pruning, defaulting."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from respawn_local.apiserver.common import Obj


def _type_ok(schema: Obj, value: Any) -> bool:
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if t is None:
        return True
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    return True


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)


def apply_schema(
    schema: Obj, value: Any, path: str, errors: list[Obj], prune: bool = True, dropped: list[str] | None = None
) -> Any:
    """Validate `value` against a structural schema; return it pruned and defaulted.

    Errors are appended as `causes` entries (reason, message, field) like kube's;
    the paths of pruned unknown fields are appended to `dropped`.
    """

    def err(reason: str, msg: str) -> None:
        errors.append(
            {
                "reason": reason,
                "message": f"Invalid value: {msg}" if reason == "FieldValueInvalid" else msg,
                "field": path,
            }
        )

    if value is None:
        if schema.get("nullable"):
            return None
        err("FieldValueInvalid", f'"null": {path} in body must be of type {schema.get("type", "object")}')
        return None
    if not _type_ok(schema, value):
        shown = type(value).__name__
        t = (
            "string"
            if isinstance(value, str)
            else {"dict": "object", "list": "array", "bool": "boolean", "int": "integer", "float": "number"}.get(
                shown, shown
            )
        )
        want = "integer,string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        err("FieldValueTypeInvalid", f'Invalid value: "{t}": {path} in body must be of type {want}: "{t}"')
        return value
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_fmt(v) for v in schema["enum"])
        err("FieldValueNotSupported", f"Unsupported value: {_fmt(value)}: supported values: {supported}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            err("FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            err(
                "FieldValueInvalid",
                f"{_fmt(value)}: {path} in body should be at least {schema['minLength']} chars long",
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            err("FieldValueInvalid", f"{_fmt(value)}: {path} in body should match '{schema['pattern']}'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            excl = schema.get("exclusiveMinimum") is True
            if value < schema["minimum"] or (excl and value == schema["minimum"]):
                err(
                    "FieldValueInvalid",
                    f"{value}: {path} in body should be greater than {'' if excl else 'or equal to '}{schema['minimum']}",
                )
        if "maximum" in schema:
            excl = schema.get("exclusiveMaximum") is True
            if value > schema["maximum"] or (excl and value == schema["maximum"]):
                err(
                    "FieldValueInvalid",
                    f"{value}: {path} in body should be less than {'' if excl else 'or equal to '}{schema['maximum']}",
                )
    for combinator in ("allOf", "anyOf", "oneOf"):
        subs = schema.get(combinator)
        if subs:
            results = []
            for sub in subs:
                sub_errors: list[Obj] = []
                apply_schema(sub, value, path, sub_errors, prune=False)
                results.append(sub_errors)
            if combinator == "allOf":
                for r in results:
                    errors.extend(r)
            elif combinator == "anyOf" and all(results):
                errors.extend(results[0])
            elif combinator == "oneOf" and sum(1 for r in results if not r) != 1:
                err("FieldValueInvalid", f"{path} in body must match exactly one schema in oneOf")
    if "not" in schema:
        sub_errors = []
        apply_schema(schema["not"], value, path, sub_errors, prune=False)
        if not sub_errors:
            err("FieldValueInvalid", f"{path} in body must not validate the schema (not)")

    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            err("FieldValueTooMany", f"must have at most {schema['maxProperties']} items")
        props: Obj = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-embedded-resource")
        result: Obj = {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value = {**value, key: copy.deepcopy(sub["default"])}
        for key, item in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key in props:
                result[key] = apply_schema(props[key], item, sub_path, errors, prune, dropped)
            elif isinstance(additional, dict):
                result[key] = apply_schema(additional, item, sub_path, errors, prune, dropped)
            elif additional is True or preserve or not prune:
                result[key] = item
            elif dropped is not None:
                dropped.append(sub_path)  # pruned, like the real server does with unknown fields
        for key in schema.get("required") or []:
            if key not in result:
                sub_path = f"{path}.{key}" if path else key
                errors.append({"reason": "FieldValueRequired", "message": "Required value", "field": sub_path})
        return result
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            err("FieldValueTooMany", f"must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            err("FieldValueInvalid", f"{path} in body should have at least {schema['minItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            return [apply_schema(items, v, f"{path}[{i}]", errors, prune, dropped) for i, v in enumerate(value)]
    return value

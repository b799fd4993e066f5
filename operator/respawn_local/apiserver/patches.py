"""JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from respawn_local.apiserver.common import Obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_directives(patch: Any) -> Any:
    """Drop strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`)."""
    if isinstance(patch, dict):
        return {k: strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [strip_directives(v) for v in patch]
    return patch


# patchMergeKey of the list fields kubectl's strategic merge patches touch (k8s.io/api
# struct tags); other lists are replaced. `finalizers` merges as a set, like kube.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "envFrom": None,
}
_SET_LISTS = {"finalizers"}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, for the list fields in `_MERGE_KEYS` (else a merge patch).

    Supports `$patch: replace|delete` (in maps and list items), `$deleteFromPrimitiveList/<f>`,
    and ignores `$setElementOrder/<f>` and `$retainKeys` (order: existing items first).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in (value or [])]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and _MERGE_KEYS.get(key) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])  # type: ignore[arg-type]
        elif isinstance(value, list) and key in _SET_LISTS and isinstance(result.get(key), list):
            result[key] = result[key] + [v for v in value if v not in result[key]]
        elif isinstance(value, list):
            result[key] = strip_directives(value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            merged.append(strip_directives(item))
            continue
        idx = next(
            (i for i, c in enumerate(merged) if isinstance(c, dict) and c.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                merged.pop(idx)
        elif idx is None:
            merged.append(strip_directives(item))
        else:
            merged[idx] = strategic_merge_patch(merged[idx], item)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise KeyError(p)
    return doc


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))

        def put(parts: list[str], value: Any, replace: bool) -> None:
            nonlocal doc
            if not parts:
                doc = value
                return
            parent = _resolve(doc, parts[:-1])
            last = parts[-1]
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif replace:
                    parent[int(last)] = value
                else:
                    idx = int(last)
                    if idx > len(parent):
                        raise IndexError(last)
                    parent.insert(idx, value)
            else:
                if replace and last not in parent:
                    raise KeyError(last)
                parent[last] = value

        def take(parts: list[str]) -> Any:
            parent = _resolve(doc, parts[:-1])
            last = parts[-1]
            if isinstance(parent, list):
                return parent.pop(int(last))
            return parent.pop(last)

        if kind == "add":
            put(parts, copy.deepcopy(op["value"]), replace=False)
        elif kind == "remove":
            take(parts)
        elif kind == "replace":
            put(parts, copy.deepcopy(op["value"]), replace=True)
        elif kind == "move":
            value = take(_pointer(op["from"]))
            put(parts, value, replace=False)
        elif kind == "copy":
            put(parts, copy.deepcopy(_resolve(doc, _pointer(op["from"]))), replace=False)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise ValueError(f"test failed at {op.get('path')}")
        else:
            raise ValueError(f"unknown op {kind!r}")
    return doc

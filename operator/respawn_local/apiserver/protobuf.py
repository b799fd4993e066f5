"""Protobuf: the few kinds kubectl's typed commands send that way."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from respawn_local.apiserver.common import ApiError, Obj

# kubectl's typed clients (`kubectl create namespace|configmap|secret|serviceaccount`,
# the eviction in `kubectl drain`) send protobuf bodies, never JSON. We decode those
# kinds with field numbers from k8s.io/api's generated.proto; anything else is a 415.

_PB_TIME = "time"
_PB_MAP_STR = ("map", "string")
_PB_MAP_B64 = ("map", "base64")
_PB_OWNER_REF: dict[int, tuple[str, Any]] = {
    5: ("apiVersion", "string"),
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_META: dict[int, tuple[str, Any]] = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", _PB_TIME),
    9: ("deletionTimestamp", _PB_TIME),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", _PB_MAP_STR),
    12: ("annotations", _PB_MAP_STR),
    13: ("ownerReferences", ("repeated", _PB_OWNER_REF)),
    14: ("finalizers", ("repeated", "string")),
}
_PB_DELETE_OPTIONS: dict[int, tuple[str, Any]] = {
    1: ("gracePeriodSeconds", "int"),
    2: ("preconditions", {1: ("uid", "string"), 2: ("resourceVersion", "string")}),
    3: ("orphanDependents", "bool"),
    4: ("propagationPolicy", "string"),
    5: ("dryRun", ("repeated", "string")),
}
_PB_OBJECT_REF: dict[int, tuple[str, Any]] = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("resourceVersion", "string"),
    7: ("fieldPath", "string"),
}
_PB_KINDS: dict[tuple[str, str], dict[int, tuple[str, Any]]] = {
    ("v1", "ConfigMap"): {
        1: ("metadata", _PB_META),
        2: ("data", _PB_MAP_STR),
        3: ("binaryData", _PB_MAP_B64),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _PB_META),
        2: ("data", _PB_MAP_B64),
        3: ("type", "string"),
        4: ("stringData", _PB_MAP_STR),
        5: ("immutable", "bool"),
    },
    ("v1", "Namespace"): {
        1: ("metadata", _PB_META),
        2: ("spec", {1: ("finalizers", ("repeated", "string"))}),
        3: ("status", {1: ("phase", "string")}),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _PB_META),
        2: ("secrets", ("repeated", _PB_OBJECT_REF)),
        3: ("imagePullSecrets", ("repeated", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "bool"),
    },
    ("policy/v1", "Eviction"): {1: ("metadata", _PB_META), 2: ("deleteOptions", _PB_DELETE_OPTIONS)},
    ("v1", "DeleteOptions"): _PB_DELETE_OPTIONS,
    ("meta.k8s.io/v1", "DeleteOptions"): _PB_DELETE_OPTIONS,
}


def _pb_fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """Protobuf wire format: (field number, wire type, value) triples."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(buf):
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            yield num, wt, varint()
        elif wt == 2:
            n = varint()
            yield num, wt, buf[i : i + n]
            i += n
        elif wt == 1:
            yield num, wt, buf[i : i + 8]
            i += 8
        elif wt == 5:
            yield num, wt, buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")


def _pb_value(kind: Any, raw: Any) -> Any:
    if kind == "string":
        return raw.decode()
    if kind == "base64":
        import base64

        return base64.b64encode(raw).decode()
    if kind == "int":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if kind == "bool":
        return bool(raw)
    if kind == _PB_TIME:
        secs = dict((n, v) for n, _, v in _pb_fields(raw)).get(1, 0)
        return datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(kind, dict):
        return _pb_message(kind, raw)
    raise ValueError(f"unsupported field kind {kind!r}")


def _pb_message(schema: dict[int, tuple[str, Any]], buf: bytes) -> Obj:
    out: Obj = {}
    for num, _, raw in _pb_fields(buf):
        if num not in schema:
            continue
        name, kind = schema[num]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = dict((n, v) for n, _, v in _pb_fields(raw))
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _pb_value(kind[1], entry.get(2, b""))
        elif isinstance(kind, tuple) and kind[0] == "repeated":
            out.setdefault(name, []).append(_pb_value(kind[1], raw))
        else:
            out[name] = _pb_value(kind, raw)
    return out


def decode_protobuf(body: bytes) -> Obj:
    """Decode a Kubernetes protobuf body (`k8s\\0` + runtime.Unknown) of a supported kind."""
    if not body.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "protobuf body without the k8s magic prefix")
    envelope = dict((n, v) for n, _, v in _pb_fields(body[4:]))
    type_meta = dict((n, v.decode()) for n, _, v in _pb_fields(envelope.get(1, b"")))
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    schema = _PB_KINDS.get((api_version, kind))
    if schema is None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the emulator decodes protobuf only for {sorted({k for _, k in _PB_KINDS})}, not {api_version}/{kind}: send JSON",
        )
    obj = _pb_message(schema, envelope.get(2, b""))
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj

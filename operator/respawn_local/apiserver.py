"""A faithful, in-process Kubernetes API server emulator on aiohttp.

It speaks the real REST protocol over HTTP on 127.0.0.1, so kopf, the `kubernetes`
python client and `kubectl` all talk to it unmodified. It keeps the semantics our
operator relies on: uids, one global resourceVersion counter, generation, 409 on
stale writes, CRD schemas (validation, pruning, defaults), status subresources,
label/field selectors, watches with bounded history (410 Gone), finalizers and
ownerReference garbage collection, graceful pod deletion and the eviction API.

What it deliberately leaves out is written down in docs/emulator.md.

Use `ApiServer` inside a running event loop, or `ApiServerThread` from sync code
(tests, the local demo): it runs the server in a background thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import copy
import dataclasses
import datetime
import hashlib
import json
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from respawn_local.apiauth import (
    EXTRA_POD_NAME,
    EXTRA_POD_UID,
    RBAC_GROUP,
    RequestAttributes,
    TlsFiles,
    TokenAuthority,
    authorize,
    service_account_user,
)

Obj = dict[str, Any]

# The request's ?fieldValidation= (Strict/Warn/Ignore), seen by schema validation.
_field_validation: contextvars.ContextVar[str | None] = contextvars.ContextVar("field_validation", default=None)

# ---------------------------------------------------------------------------
# Errors and small helpers
# ---------------------------------------------------------------------------


class ApiError(Exception):
    """An API failure carrying the `Status` object the server answers with."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        """The error as a Kubernetes `Status` object."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def now_rfc3339(offset: float = 0.0) -> str:
    """Current UTC time (plus `offset` seconds) the way Kubernetes prints it."""
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime.datetime:
    """Parse a Kubernetes timestamp (seconds or fractional precision)."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """Kubernetes' `duration.HumanDuration` (what `kubectl get` shows as AGE)."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what kube's generateName uses
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def random_suffix(n: int = 5) -> str:
    """Random suffix in the alphabet kube uses for generated names."""
    return "".join(random.choice(_NAME_CHARS) for _ in range(n))


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


# ---------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------


def _split_terms(expr: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur.strip())
    return terms


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


def parse_label_selector(expr: str | None) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector string into a predicate over a labels dict."""
    if not expr:
        return lambda labels: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(expr):
        m = _SET_TERM.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "==" in term or "=" in term:
            key, value = (s.strip() for s in re.split(r"==?", term, maxsplit=1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda labels, k=absent: k not in labels)
        elif re.match(r"^[A-Za-z0-9./_-]+$", term):
            checks.append(lambda labels, k=term: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(c(labels) for c in checks)


def _dotted(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(expr: str | None, allowed: Iterable[str]) -> Callable[[Obj], bool]:
    """Compile a field selector; unsupported fields are a 400 like the real server."""
    if not expr:
        return lambda obj: True
    allowed = set(allowed)
    checks: list[Callable[[Obj], bool]] = []
    for term in _split_terms(expr):
        m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed and not any(a.endswith(".*") and field.startswith(a[:-1]) for a in allowed):
            raise ApiError(400, "BadRequest", f'field label not supported: {field}')
        if op == "!=":
            checks.append(lambda o, f=field, v=value: str(_dotted(o, f) or "") != v)
        else:
            checks.append(lambda o, f=field, v=value: str(_dotted(o, f) or "") == v)
    return lambda obj: all(c(obj) for c in checks)


# ---------------------------------------------------------------------------
# CRD structural schemas: validation, pruning, defaulting
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Resource types
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ResourceType:
    """One served resource (a built-in or a CRD's)."""

    group: str
    """API group, "" for core."""
    versions: list[str]
    """Served versions; the first is the preferred one."""
    plural: str
    """URL name, e.g. `pods`."""
    singular: str
    """Singular name, e.g. `pod`."""
    kind: str
    """Object kind, e.g. `Pod`."""
    namespaced: bool
    """Whether objects live in namespaces."""
    short_names: list[str] = dataclasses.field(default_factory=list)
    """kubectl short names."""
    categories: list[str] = dataclasses.field(default_factory=list)
    """kubectl categories (e.g. `all`)."""
    status_subresource: bool = False
    """Whether writes to the main resource ignore `.status` (and `/status` changes only it)."""
    schemas: dict[str, Obj] = dataclasses.field(default_factory=dict)
    """openAPIV3Schema per version (CRDs only)."""
    printer_columns: dict[str, list[Obj]] = dataclasses.field(default_factory=dict)
    """additionalPrinterColumns per version (CRDs only)."""
    field_selectors: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    """Fields usable in fieldSelector."""
    extra_subresources: tuple[str, ...] = ()
    """Subresources other than status (e.g. `eviction`, `log`, `binding`)."""
    crd: bool = False
    """Whether the type comes from a CustomResourceDefinition."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """`plural.group` (or just plural for core), as used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


def _builtin_types() -> list[ResourceType]:
    pod_fields = (
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    )
    event_fields = (
        "metadata.name",
        "metadata.namespace",
        "involvedObject.*",
        "reason",
        "type",
        "source",
        "reportingComponent",
    )
    return [
        ResourceType(
            "",
            ["v1"],
            "namespaces",
            "namespace",
            "Namespace",
            False,
            ["ns"],
            status_subresource=True,
            field_selectors=("metadata.name", "status.phase"),
        ),
        ResourceType(
            "",
            ["v1"],
            "pods",
            "pod",
            "Pod",
            True,
            ["po"],
            ["all"],
            status_subresource=True,
            field_selectors=pod_fields,
            extra_subresources=("eviction", "log", "binding"),
        ),
        ResourceType("", ["v1"], "events", "event", "Event", True, ["ev"], field_selectors=event_fields),
        ResourceType(
            "",
            ["v1"],
            "nodes",
            "node",
            "Node",
            False,
            ["no"],
            status_subresource=True,
            field_selectors=("metadata.name", "spec.unschedulable"),
        ),
        ResourceType("", ["v1"], "configmaps", "configmap", "ConfigMap", True, ["cm"]),
        ResourceType(
            "",
            ["v1"],
            "secrets",
            "secret",
            "Secret",
            True,
            field_selectors=("metadata.name", "metadata.namespace", "type"),
        ),
        ResourceType(
            "",
            ["v1"],
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            ["sa"],
            extra_subresources=("token",),
        ),
        ResourceType("", ["v1"], "services", "service", "Service", True, ["svc"], ["all"], status_subresource=True),
        ResourceType(
            "apps",
            ["v1"],
            "deployments",
            "deployment",
            "Deployment",
            True,
            ["deploy"],
            ["all"],
            status_subresource=True,
        ),
        ResourceType(RBAC_GROUP, ["v1"], "roles", "role", "Role", True),
        ResourceType(RBAC_GROUP, ["v1"], "clusterroles", "clusterrole", "ClusterRole", False),
        ResourceType(RBAC_GROUP, ["v1"], "rolebindings", "rolebinding", "RoleBinding", True),
        ResourceType(RBAC_GROUP, ["v1"], "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
        # Stored, not enforced: the chart's policies are tested with a CEL library instead (docs/emulator.md).
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            False,
            status_subresource=True,
        ),
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            False,
        ),
        ResourceType(
            "events.k8s.io",
            ["v1"],
            "events",
            "event",
            "Event",
            True,
            ["ev"],
            field_selectors=("metadata.name", "metadata.namespace", "regarding.*", "reason", "type"),
        ),
        ResourceType(
            "batch",
            ["v1"],
            "jobs",
            "job",
            "Job",
            True,
            [],
            ["all"],
            status_subresource=True,
            field_selectors=("metadata.name", "metadata.namespace", "status.successful"),
        ),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True),
        ResourceType(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            ["crd", "crds"],
            ["api-extensions"],
            status_subresource=True,
        ),
    ]


# Built-in tables for `kubectl get` (a small subset of what the real printers show).
def _age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - parse_rfc3339(ts)).total_seconds())


def _pod_status(pod: Obj) -> str:
    st = pod.get("status", {})
    reason = st.get("reason") or st.get("phase", "Pending")
    for cs in st.get("containerStatuses", []) or []:
        state = cs.get("state", {})
        if "terminated" in state:
            reason = state["terminated"].get("reason") or reason
        elif "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_ready(pod: Obj) -> str:
    containers = pod.get("spec", {}).get("containers", []) or []
    ready = sum(1 for cs in pod.get("status", {}).get("containerStatuses", []) or [] if cs.get("ready"))
    return f"{ready}/{len(containers)}"


def _job_status(job: Obj) -> str:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended", "FailureTarget"):
            return {"FailureTarget": "FailureTarget"}.get(cond["type"], cond["type"])
    return "Running"


def _job_duration(job: Obj) -> str:
    st = job.get("status", {})
    if not st.get("startTime"):
        return ""
    end = parse_rfc3339(st["completionTime"]) if st.get("completionTime") else datetime.datetime.now(datetime.UTC)
    return human_duration((end - parse_rfc3339(st["startTime"])).total_seconds())


def _node_status(node: Obj) -> str:
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            s = "Ready" if cond.get("status") == "True" else "NotReady"
            return s + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")
    return "Unknown"


_Col = tuple[str, str, Callable[[Obj], Any], int]
_BUILTIN_COLUMNS: dict[tuple[str, str], list[_Col]] = {
    ("", "pods"): [
        ("Ready", "string", _pod_ready, 0),
        ("Status", "string", _pod_status, 0),
        (
            "Restarts",
            "string",
            lambda p: str(
                sum(cs.get("restartCount", 0) for cs in p.get("status", {}).get("containerStatuses", []) or [])
            ),
            0,
        ),
        ("Age", "string", _age, 0),
        ("IP", "string", lambda p: p.get("status", {}).get("podIP", "<none>"), 1),
        ("Node", "string", lambda p: p.get("spec", {}).get("nodeName", "<none>"), 1),
    ],
    ("batch", "jobs"): [
        ("Status", "string", _job_status, 0),
        (
            "Completions",
            "string",
            lambda j: f"{j.get('status', {}).get('succeeded', 0)}/{j.get('spec', {}).get('completions', 1)}",
            0,
        ),
        ("Duration", "string", _job_duration, 0),
        ("Age", "string", _age, 0),
    ],
    ("", "nodes"): [
        ("Status", "string", _node_status, 0),
        ("Roles", "string", lambda n: "<none>", 0),
        ("Age", "string", _age, 0),
        ("Version", "string", lambda n: n.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""), 0),
    ],
    ("", "namespaces"): [
        ("Status", "string", lambda n: n.get("status", {}).get("phase", "Active"), 0),
        ("Age", "string", _age, 0),
    ],
    ("", "events"): [
        (
            "Last Seen",
            "string",
            lambda e: _age(
                {
                    "metadata": {
                        "creationTimestamp": e.get("lastTimestamp") or e.get("metadata", {}).get("creationTimestamp")
                    }
                }
            ),
            0,
        ),
        ("Type", "string", lambda e: e.get("type", ""), 0),
        ("Reason", "string", lambda e: e.get("reason", ""), 0),
        (
            "Object",
            "string",
            lambda e: (
                f"{(e.get('involvedObject') or {}).get('kind', '').lower()}/{(e.get('involvedObject') or {}).get('name', '')}"
            ),
            0,
        ),
        ("Message", "string", lambda e: e.get("message", ""), 0),
    ],
}


def _jsonpath(obj: Obj, path: str) -> Any:
    """Evaluate the simple JSONPath subset used by printer columns (`.a.b`, `.a[0].b`)."""
    path = path.strip().strip("{}")
    cur: Any = obj
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        key, idx = part
        if key:
            if not isinstance(cur, dict) or key not in cur:
                return None
            cur = cur[key]
        else:
            if not isinstance(cur, list) or int(idx) >= len(cur):
                return None
            cur = cur[int(idx)]
    return cur


# ---------------------------------------------------------------------------
# Watches and faults
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class WatchEvent:
    """One change in the store, kept in the bounded history for watch replay."""

    rv: int
    type: str
    rkey: tuple[str, str]
    obj: Obj
    old: Obj | None = None


@dataclasses.dataclass(eq=False)
class _Watcher:
    rkey: tuple[str, str]
    namespace: str | None
    queue: asyncio.Queue[WatchEvent | None]


@dataclasses.dataclass
class FaultRule:
    """Answer `status` to the next `count` requests for which `match(request)` is true."""

    match: Callable[[web.Request], bool]
    """Predicate over the aiohttp request."""
    status: int
    """HTTP status to answer (e.g. 500, 429)."""
    count: int
    """How many more requests to fail."""
    retry_after: int | None = None
    """Retry-After seconds for 429 answers."""


class Faults:
    """Fault injection for tests: failing requests, cut watches, a paused server.

    Methods must be called on the server's loop; `ApiServerThread.faults` wraps them
    for other threads.
    """

    def __init__(self, server: ApiServer) -> None:
        self._server = server
        self.rules: list[FaultRule] = []
        self.paused_until = 0.0
        self.injected = 0

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        match: Callable[[web.Request], bool] | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """Make the next `count` requests matching `match` (default: all) answer `status`."""
        rule = FaultRule(match or (lambda r: True), status, count, retry_after)
        self.rules.append(rule)
        return rule

    def close_watches(self) -> int:
        """End every open watch stream now (clients see EOF and must re-watch)."""
        n = 0
        for w in list(self._server._watchers):
            w.queue.put_nowait(None)
            n += 1
        return n

    async def pause(self, seconds: float, refuse: bool = False) -> None:
        """Stop answering for `seconds`.

        refuse=False: requests hang until the pause ends (a stuck server).
        refuse=True: the listening socket is closed, new connections are refused, and
        open watches are cut; the server comes back on the same port afterwards.
        """
        loop = asyncio.get_running_loop()
        self.paused_until = loop.time() + seconds
        if refuse:
            self.close_watches()
            await self._server._stop_site()
            self._server._drop_connections()
            loop.call_later(seconds, lambda: asyncio.ensure_future(self._server._start_site()))

    def _take(self, request: web.Request) -> FaultRule | None:
        for rule in self.rules:
            if rule.count > 0 and rule.match(request):
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
                self.injected += 1
                return rule
        return None


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


class ApiServer:
    """The Kubernetes API emulator. Create, `await start()`, use `url`, `await stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 5000,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
        strict_namespaces: bool = True,
        gc_interval: float = 0.2,
        bookmark_interval: float = 5.0,
        authenticate: bool = True,
        allow_anonymous: bool = False,
        tls: bool = True,
    ) -> None:
        self.host = host
        self.authenticate = authenticate
        """Refuse requests without a valid token (401) and judge the rest by RBAC (403)."""
        self.tokens = TokenAuthority(allow_anonymous=allow_anonymous)
        self.admin_token = self.tokens.admin_token
        """A bearer token of a `system:masters` user (kubeconfigs, the pod simulator)."""
        self.denials: list[tuple[str, str, int]] = []
        """Requests refused by authentication (401) or RBAC (403), as (user, what, code)."""
        self.tls = TlsFiles.create() if tls else None
        """Serve HTTPS with a fresh CA (`tls.ca_file` is what clients trust)."""
        self.bookmark_interval = bookmark_interval
        self.port = port
        self.history_size = history_size
        self.strict_namespaces = strict_namespaces
        self.gc_interval = gc_interval
        self.types: dict[tuple[str, str], ResourceType] = {t.key: t for t in _builtin_types()}
        self.store: dict[tuple[str, str], dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.rv = 0
        self.history: collections.deque[WatchEvent] = collections.deque()
        self.compacted_rv = 0
        self._watchers: set[_Watcher] = set()  # type: ignore[arg-type]
        self.faults = Faults(self)
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        """Requests by (verb, resource), e.g. ("patch", "pipelineruns/status")."""
        self.requests_by_agent: collections.Counter[tuple[str, str, str]] = collections.Counter()
        """Requests by (user agent product, verb, resource)."""
        self.expired_watches = 0
        """Watches answered with 410 Gone (their resourceVersion was compacted away)."""
        self.request_log: collections.deque[tuple[str, str, str, int]] = collections.deque(maxlen=10000)
        """Recent requests as (method, path?query, user agent, status)."""
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._gc_wake: asyncio.Event | None = None
        self._stopping = False
        for ns in namespaces:
            self._create(self.types[("", "namespaces")], None, {"metadata": {"name": ns}})

    # -- lifecycle --------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. https://127.0.0.1:40123 (http without `tls`)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> str:
        """Bind (a free port unless one was given) and serve; return the URL."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._start_site()
        self._gc_wake = asyncio.Event()
        self._gc_task = asyncio.create_task(self._gc_loop())
        return self.url

    async def _start_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            reuse_address=True,
            ssl_context=self.tls.server_context() if self.tls else None,
        )
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def _drop_connections(self) -> None:
        """Close every open client connection (keep-alive ones too), like a crashed server."""
        server = self._runner.server if self._runner is not None else None
        for handler in list(getattr(server, "connections", []) or []):
            handler.force_close()
            if handler.transport is not None:
                handler.transport.close()

    async def stop(self) -> None:
        """Close watches, stop serving, stop the garbage collector."""
        self._stopping = True  # 3.11's wait_for may swallow the cancellation below
        if self._gc_wake is not None:
            self._gc_wake.set()
        self.faults.close_watches()
        if self._gc_task:
            self._gc_task.cancel()
            try:
                await self._gc_task
            except asyncio.CancelledError:
                pass
        if self._runner:
            await self._runner.cleanup()

    # -- type lookup -----------------------------------------------------

    def resolve(self, name: str) -> ResourceType:
        """Find a type by plural, singular, kind, short name, or `plural.group`."""
        low = name.lower()
        for t in self.types.values():
            if low in (t.qualified, f"{t.singular}.{t.group}", f"{t.kind.lower()}.{t.group}"):
                return t
        candidates = [t for t in self.types.values() if low in (t.plural, t.singular, t.kind.lower(), *t.short_names)]
        # Prefer core over events.k8s.io for "events", like kubectl.
        candidates.sort(key=lambda t: (t.group != "", t.group))
        if not candidates:
            raise ApiError(404, "NotFound", f"the server doesn't have a resource type {name!r}")
        return candidates[0]

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        for t in self.types.values():
            if t.group == group and t.kind == kind:
                return t
        raise ApiError(404, "NotFound", f"no matches for kind {kind!r} in version {api_version!r}")

    # -- store primitives -----------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, etype: str, rtype: ResourceType, obj: Obj, old: Obj | None = None) -> None:
        ev = WatchEvent(int(obj["metadata"]["resourceVersion"]), etype, rtype.key, copy.deepcopy(obj), old)
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        ns = obj["metadata"].get("namespace")
        for w in self._watchers:
            if w.rkey == rtype.key and (w.namespace is None or w.namespace == ns):
                w.queue.put_nowait(ev)
        if etype in ("DELETED", "MODIFIED") and self._gc_wake is not None:
            self._gc_wake.set()

    def _not_found(self, rtype: ResourceType, name: str) -> ApiError:
        details: Obj = {"name": name, "kind": rtype.plural}
        if rtype.group:
            details["group"] = rtype.group
        return ApiError(404, "NotFound", f'{rtype.qualified} "{name}" not found', details)

    def _get(self, rtype: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.store[rtype.key].get((ns or "", name))
        if obj is None:
            raise self._not_found(rtype, name)
        return obj

    def _check_namespace(self, rtype: ResourceType, ns: str | None) -> str:
        if rtype.namespaced:
            if not ns:
                raise ApiError(
                    400, "BadRequest", "the server could not find the requested resource: namespace is required"
                )
            namespace = self.store[("", "namespaces")].get(("", ns))
            if self.strict_namespaces and namespace is None:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {ns} because it is being terminated",
                    {
                        "name": ns,
                        "kind": "namespaces",
                        "causes": [
                            {
                                "reason": "NamespaceTerminating",
                                "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace",
                            }
                        ],
                    },
                )
            return ns
        return ""

    def _invalid(self, rtype: ResourceType, name: str, causes: list[Obj]) -> ApiError:
        kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
        text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
        details: Obj = {"name": name, "kind": rtype.kind, "causes": causes}
        if rtype.group:
            details["group"] = rtype.group
        if len(causes) > 1:
            text = f"[{text}]"
        return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details)

    def _validate(self, rtype: ResourceType, obj: Obj, version: str | None, field_validation: str | None = None) -> Obj:
        """Validate name and (for CRDs) the schema; return the pruned, defaulted object.

        Unknown fields are pruned; with `fieldValidation=Strict` (what kubectl sends)
        they are a 400, like the real server.
        """
        name = obj["metadata"].get("name", "")
        causes: list[Obj] = []
        if not name:
            causes.append(
                {
                    "reason": "FieldValueRequired",
                    "message": "Required value: name or generateName is required",
                    "field": "metadata.name",
                }
            )
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                }
            )
        for value in (obj["metadata"].get("labels") or {}).values():
            if (
                not isinstance(value, str)
                or len(value) > 63
                or (value and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value))
            ):
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.labels",
                        "message": f"Invalid value: {json.dumps(value)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
                    }
                )
        if rtype.key == ("", "pods"):
            causes += _pod_spec_problems(obj.get("spec"), "spec")
        elif rtype.key == ("batch", "jobs"):
            template = (obj.get("spec") or {}).get("template") or {}
            causes += _pod_spec_problems(template.get("spec"), "spec.template.spec")
        field_validation = field_validation or _field_validation.get()
        schema = rtype.schemas.get(version or rtype.versions[0])
        if schema is not None and not causes:
            meta, api_version, kind = obj["metadata"], obj.get("apiVersion"), obj.get("kind")
            body = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
            root = {
                **schema,
                "properties": {
                    k: v
                    for k, v in (schema.get("properties") or {}).items()
                    if k not in ("metadata", "apiVersion", "kind")
                },
            }
            root.pop("required", None)
            dropped: list[str] = []
            pruned = apply_schema(root, body, "", causes, dropped=dropped)
            if dropped and field_validation == "Strict":
                fields = ", ".join(f'unknown field "{d}"' for d in dropped)
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{rtype.kind} in version "{version or rtype.versions[0]}" cannot be handled as a {rtype.kind}: strict decoding error: {fields}',
                )
            for key in schema.get("required") or []:
                if key not in ("metadata", "apiVersion", "kind") and key not in pruned:
                    causes.append({"reason": "FieldValueRequired", "message": "Required value", "field": key})
            obj = {"apiVersion": api_version, "kind": kind, "metadata": meta, **pruned}
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions") and not causes:
            causes.extend(self._crd_problems(obj))
        if causes:
            raise self._invalid(rtype, name, causes)
        return obj

    def _create(self, rtype: ResourceType, ns: str | None, body: Obj, version: str | None = None) -> Obj:
        ns = self._check_namespace(rtype, ns)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(20):
                meta["name"] = meta["generateName"] + random_suffix()
                if (ns, meta["name"]) not in self.store[rtype.key]:
                    break
        obj["apiVersion"] = rtype.api_version(version)
        obj["kind"] = rtype.kind
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        meta["uid"] = str(uuid.uuid4())
        if rtype.status_subresource and (
            rtype.crd
            or rtype.key in (("", "pods"), ("batch", "jobs"), ("apiextensions.k8s.io", "customresourcedefinitions"))
        ):
            obj.pop("status", None)  # like the real strategies' PrepareForCreate; nodes keep theirs
        self._apply_defaults(rtype, obj)
        if rtype.key == ("batch", "jobs"):
            self._finish_job_create(obj)
        obj = self._validate(rtype, obj, version)
        meta = obj["metadata"]
        name = meta["name"]
        if (ns, name) in self.store[rtype.key]:
            details: Obj = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists', details)
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = obj
        self.uids[meta["uid"]] = (rtype.key, ns, name)
        self._emit("ADDED", rtype, obj)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._serve_crd(obj)
        if rtype.key == ("", "namespaces"):
            # The ServiceAccount controller gives every namespace a `default` account.
            self._create(self.types[("", "serviceaccounts")], name, {"metadata": {"name": "default"}})
        return obj

    def _apply_defaults(self, rtype: ResourceType, obj: Obj) -> None:
        """Defaults the real server fills in for the built-ins we care about."""
        if rtype.key == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            containers = spec.get("containers")
            for c in containers if isinstance(containers, list) else []:
                if not isinstance(c, dict):
                    continue  # validation refuses it with a message
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("imagePullPolicy", "IfNotPresent")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            obj["status"].setdefault("qosClass", "BestEffort")
        elif rtype.key == ("batch", "jobs"):
            spec = obj.setdefault("spec", {})
            for key, value in (
                ("backoffLimit", 6),
                ("completions", 1),
                ("parallelism", 1),
                ("suspend", False),
                ("completionMode", "NonIndexed"),
                ("manualSelector", False),
            ):
                spec.setdefault(key, value)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            obj.setdefault("status", {})
        elif rtype.key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")

    def _finish_job_create(self, obj: Obj) -> None:
        # The real Job strategy labels the job and its template with the controller uid.
        uid, name = obj["metadata"]["uid"], obj["metadata"].get("name", "")
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec = obj["spec"]
        if not spec.get("manualSelector"):
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
            tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
            tmeta.setdefault("labels", {}).update(labels)
        meta_labels = obj["metadata"].setdefault("labels", {})
        for key in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name", "controller-uid", "job-name"):
            meta_labels.setdefault(key, labels[key])

    def _update(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        new: Obj,
        subresource: str | None,
        version: str | None = None,
        expected_rv: str | None = None,
    ) -> Obj:
        """Replace an object (PUT semantics); `new` is the full desired object."""
        ns = "" if not rtype.namespaced else (ns or "")
        old = self._get(rtype, ns, name)
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        rv = expected_rv if expected_rv is not None else meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            details: Obj = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                details,
            )
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if rtype.status_subresource:
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            else:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        meta = new.setdefault("metadata", {})
        # Immutable/system metadata comes from the stored object.
        for key in (
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["name"] = name
        if old["metadata"].get("deletionTimestamp"):
            # Finalizers can only be removed from an object being deleted, not added.
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)}',
                )
        new["apiVersion"] = rtype.api_version(version)
        new["kind"] = rtype.kind
        if rtype.key == ("", "pods"):
            self._apply_defaults(rtype, new)
        new = self._validate(rtype, new, version)
        self._check_immutable(rtype, old, new)
        meta = new["metadata"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if not meta.get("ownerReferences"):
            meta.pop("ownerReferences", None)
        if self._spec_changed(rtype, old, new):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if _strip_rv(new) == _strip_rv(old):
            return old  # no-op writes do not bump resourceVersion, like kube
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = new
        self._emit("MODIFIED", rtype, new, old)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._serve_crd(new)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and (rtype.key != ("", "pods") or meta.get("deletionGracePeriodSeconds", 0) == 0)
        ):
            return self._remove(rtype, new)
        return new

    def _check_immutable(self, rtype: ResourceType, old: Obj, new: Obj) -> None:
        """The immutability rules of pods and jobs that a controller can trip over."""
        name = old["metadata"]["name"]
        if rtype.key == ("", "pods"):
            # Like ValidatePodUpdate: spec.activeDeadlineSeconds may be set or lowered, never
            # raised or removed (a running pod's deadline only ever comes closer).
            old_deadline = (old.get("spec") or {}).get("activeDeadlineSeconds")
            new_deadline = (new.get("spec") or {}).get("activeDeadlineSeconds")
            problem = None
            if new_deadline is not None and (not isinstance(new_deadline, int) or new_deadline < 0):
                problem = "must be between 0 and 2147483647, inclusive"
            elif new_deadline is not None and old_deadline is not None and old_deadline < new_deadline:
                problem = "must be less than or equal to previous value"
            elif new_deadline is None and old_deadline is not None:
                problem = "must not update from a positive integer to nil value"
            if problem is not None:
                raise self._invalid(
                    rtype,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.activeDeadlineSeconds",
                            "message": f"Invalid value: {json.dumps(new_deadline)}: {problem}",
                        }
                    ],
                )

            def mutable_removed(spec: Obj) -> Obj:
                spec = copy.deepcopy(spec or {})
                for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"):
                    spec.pop(key, None)
                for key in ("containers", "initContainers"):
                    for c in spec.get(key) or []:
                        c.pop("image", None)
                return spec

            if mutable_removed(old.get("spec")) != mutable_removed(new.get("spec")):
                raise self._invalid(
                    rtype,
                    name,
                    [
                        {
                            "reason": "FieldValueForbidden",
                            "field": "spec",
                            "message": "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                            "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                        }
                    ],
                )
        elif rtype.key == ("batch", "jobs"):
            old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
            causes = []
            for field in ("selector", "completionMode", "podFailurePolicy"):
                if old_spec.get(field) != new_spec.get(field):
                    causes.append(
                        {
                            "reason": "FieldValueInvalid",
                            "field": f"spec.{field}",
                            "message": f"Invalid value: {json.dumps(new_spec.get(field))}: field is immutable",
                        }
                    )
            old_t, new_t = copy.deepcopy(old_spec.get("template") or {}), copy.deepcopy(new_spec.get("template") or {})
            # Scheduling directives may change while a suspended Job has never started.
            if new_spec.get("suspend") and not (old.get("status") or {}).get("startTime"):
                for t in (old_t, new_t):
                    for key in ("nodeSelector", "tolerations", "affinity", "schedulingGates"):
                        (t.get("spec") or {}).pop(key, None)
                    for key in ("labels", "annotations"):
                        (t.get("metadata") or {}).pop(key, None)
            if old_t != new_t:
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.template",
                        "message": "Invalid value: {...}: field is immutable",
                    }
                )
            if causes:
                raise self._invalid(rtype, name, causes)

    @staticmethod
    def _spec_changed(rtype: ResourceType, old: Obj, new: Obj) -> bool:
        skip = {"metadata", "apiVersion", "kind"}
        if rtype.status_subresource:
            skip.add("status")
        a = {k: v for k, v in old.items() if k not in skip}
        b = {k: v for k, v in new.items() if k not in skip}
        return a != b

    def _patch(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        subresource: str | None,
        version: str | None = None,
    ) -> Obj:
        old = self._get(rtype, ns if rtype.namespaced else "", name)
        current = copy.deepcopy(old)
        current["apiVersion"] = rtype.api_version(version)
        try:
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise ValueError("a JSON patch must be a list of operations")
                result = json_patch(current, patch)
            elif patch_type == "strategic":
                if rtype.crd:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources: use a merge patch",
                    )
                result = strategic_merge_patch(current, patch)
            else:
                result = merge_patch(current, patch)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
            ) from None
        if not isinstance(result, dict):
            raise ApiError(400, "BadRequest", "patch result is not an object")
        rv = (result.get("metadata") or {}).get("resourceVersion")
        if rv is None or rv == old["metadata"]["resourceVersion"]:
            rv = None
        return self._update(rtype, ns, name, result, subresource, version, expected_rv=rv or None)

    def _remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Take an object out of storage for good (finalizers are done)."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self.store[rtype.key].pop(key, None)
        if old is None:
            return obj
        self.uids.pop(meta["uid"], None)
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", rtype, gone)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unserve_crd(old)
        return gone

    def _delete(self, rtype: ResourceType, ns: str | None, name: str, options: Obj) -> Obj:
        ns = ns if rtype.namespaced else ""
        obj = self._get(rtype, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: {obj["metadata"]["uid"]}',
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, ResourceVersion in object meta: {obj["metadata"]["resourceVersion"]}',
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            # batch/v1 Jobs default to orphaning their pods (kept for backward
            # compatibility by the real server); everything else is Background.
            policy = "Orphan" if rtype.key == ("batch", "jobs") else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f"propagationPolicy: Unsupported value: {policy!r}")
        if policy == "Orphan":
            self._orphan_dependents(obj["metadata"]["uid"])
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers and self._has_dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")

        if rtype.key == ("", "pods"):
            grace = options.get("gracePeriodSeconds")
            if grace is None:
                grace = new.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            node = new.get("spec", {}).get("nodeName")
            phase = new.get("status", {}).get("phase")
            graceful = (
                grace > 0 and node and ("", node) in self.store[("", "nodes")] and phase not in ("Succeeded", "Failed")
            )
            if not graceful:
                grace = 0
            current = meta.get("deletionGracePeriodSeconds")
            if current is None or grace < current:
                meta["deletionGracePeriodSeconds"] = grace
                meta["deletionTimestamp"] = now_rfc3339(grace)
            if meta["deletionGracePeriodSeconds"] == 0 and not finalizers:
                return self._remove(rtype, obj)
        else:
            namespace_content = rtype.key == ("", "namespaces") and (new.get("spec") or {}).get("finalizers")
            if rtype.key == ("", "namespaces") and name in ("default", "kube-system", "kube-public"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    {"name": name, "kind": "namespaces"},
                )
            if not finalizers and not namespace_content:
                return self._remove(rtype, obj)
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta.setdefault("deletionGracePeriodSeconds", 0)
            if rtype.key == ("", "namespaces"):
                # The namespace controller empties it, then drops spec.finalizers (GC loop).
                new.setdefault("status", {})["phase"] = "Terminating"
        meta["finalizers"] = finalizers
        if not finalizers:
            meta.pop("finalizers")
        if not obj["metadata"].get("deletionTimestamp"):
            # Like kube's BeforeDelete: a graceful deletion bumps the generation.
            meta["generation"] = meta.get("generation", 1) + 1
        if _strip_rv(new) == _strip_rv(obj):
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = new
        self._emit("MODIFIED", rtype, new, obj)
        return new

    def _has_dependents(self, uid: str) -> bool:
        return any(
            ref.get("uid") == uid
            for objs in self.store.values()
            for o in objs.values()
            for ref in o["metadata"].get("ownerReferences") or []
        )

    def _orphan_dependents(self, uid: str) -> None:
        for rkey, objs in list(self.store.items()):
            for key, o in list(objs.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    kept = [r for r in refs if r.get("uid") != uid]
                    self._patch(
                        self.types[rkey], key[0], key[1], "merge", {"metadata": {"ownerReferences": kept or None}}, None
                    )

    def _list(
        self, rtype: ResourceType, ns: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[Obj]:
        lsel = parse_label_selector(label_selector)
        fsel = parse_field_selector(field_selector, rtype.field_selectors)
        items = [
            o
            for (ons, _), o in sorted(self.store[rtype.key].items())
            if (ns is None or not rtype.namespaced or ons == ns) and lsel(o["metadata"].get("labels") or {}) and fsel(o)
        ]
        return items

    # -- garbage collection ----------------------------------------------

    async def _gc_loop(self) -> None:
        assert self._gc_wake is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._gc_wake.wait(), timeout=self.gc_interval * 5)
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._gc_wake.clear()
            await asyncio.sleep(self.gc_interval)  # batch bursts of deletions
            try:
                self.collect_garbage()
            except Exception:  # pragma: no cover - GC must never die
                import traceback

                traceback.print_exc()

    def collect_garbage(self) -> int:
        """One pass of the ownerReference garbage collector; returns the actions taken."""
        actions = 0
        for rkey, objs in list(self.store.items()):
            rtype = self.types.get(rkey)
            if rtype is None:
                continue
            for (ns, name), o in list(objs.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if not refs:
                    continue
                alive = [r for r in refs if r.get("uid") in self.uids]
                if not alive:
                    if not o["metadata"].get("deletionTimestamp"):
                        try:
                            self._delete(rtype, ns, name, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
                    continue
                # Dependents of an owner being deleted in the foreground go first.
                for r in alive:
                    okey, ons, oname = self.uids[r["uid"]]
                    owner = self.store[okey].get((ons, oname))
                    if (
                        owner
                        and "foregroundDeletion" in (owner["metadata"].get("finalizers") or [])
                        and not o["metadata"].get("deletionTimestamp")
                    ):
                        try:
                            self._delete(rtype, ns, name, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
                        break
                if len(alive) != len(refs) and (ns, name) in objs:
                    try:
                        self._patch(rtype, ns, name, "merge", {"metadata": {"ownerReferences": alive}}, None)
                        actions += 1
                    except ApiError:
                        pass
        # Owners waiting in the foreground: done once no blocking dependents remain.
        for rkey, objs in list(self.store.items()):
            for (ns, name), o in list(objs.items()):
                fins = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fins and o["metadata"].get("deletionTimestamp"):
                    uid = o["metadata"]["uid"]
                    blocking = any(
                        ref.get("uid") == uid and ref.get("blockOwnerDeletion")
                        for objs2 in self.store.values()
                        for d in objs2.values()
                        for ref in d["metadata"].get("ownerReferences") or []
                    )
                    if not blocking:
                        rest = [f for f in fins if f != "foregroundDeletion"]
                        self._patch(
                            self.types[rkey], ns, name, "merge", {"metadata": {"finalizers": rest or None}}, None
                        )
                        actions += 1
        actions += self._finalize_namespaces()
        return actions

    def _finalize_namespaces(self) -> int:
        """The namespace controller: empty terminating namespaces, then let them go."""
        actions = 0
        namespaces = self.types[("", "namespaces")]
        for (_, ns_name), namespace in list(self.store[namespaces.key].items()):
            if not namespace["metadata"].get("deletionTimestamp"):
                continue
            remaining = 0
            for rkey, objs in list(self.store.items()):
                rtype = self.types.get(rkey)
                if rtype is None or not rtype.namespaced:
                    continue
                for (ons, oname), o in list(objs.items()):
                    if ons != ns_name:
                        continue
                    remaining += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        try:
                            self._delete(rtype, ons, oname, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
            if remaining == 0 and (namespace.get("spec") or {}).get("finalizers"):
                new = copy.deepcopy(namespace)
                new["spec"]["finalizers"] = []
                self._update(namespaces, None, ns_name, new, None)
                if ("", ns_name) in self.store[namespaces.key] and not self.store[namespaces.key][("", ns_name)][
                    "metadata"
                ].get("finalizers"):
                    self._remove(namespaces, self.store[namespaces.key][("", ns_name)])
                actions += 1
        return actions

    # -- CRDs --------------------------------------------------------------

    def _crd_problems(self, crd: Obj) -> list[Obj]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        problems = []
        for field in ("group", "scope"):
            if not spec.get(field):
                problems.append({"reason": "FieldValueRequired", "message": "Required value", "field": f"spec.{field}"})
        for field in ("plural", "kind"):
            if not names.get(field):
                problems.append(
                    {"reason": "FieldValueRequired", "message": "Required value", "field": f"spec.names.{field}"}
                )
        if spec.get("scope") not in (None, "Namespaced", "Cluster"):
            problems.append(
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.scope",
                    "message": f"Unsupported value: {spec.get('scope')!r}",
                }
            )
        if (
            names.get("plural")
            and spec.get("group")
            and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}"
        ):
            problems.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {crd['metadata']['name']!r}: must be spec.names.plural+\".\"+spec.group",
                }
            )
        versions = spec.get("versions") or []
        if not versions:
            problems.append({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.versions"})
        elif sum(1 for v in versions if v.get("storage")) != 1:
            problems.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.versions",
                    "message": "Invalid value: must have exactly one version marked as storage version",
                }
            )
        for i, v in enumerate(versions):
            if not (v.get("schema") or {}).get("openAPIV3Schema"):
                problems.append(
                    {
                        "reason": "FieldValueRequired",
                        "field": f"spec.versions[{i}].schema.openAPIV3Schema",
                        "message": "Required value: schemas are required",
                    }
                )
        return problems

    def _serve_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec["versions"] if v.get("served", True)]
        # Preferred version first: kube sorts by version priority; storage first is close enough.
        served.sort(key=lambda v: (not v.get("storage"), v["name"]))
        rtype = ResourceType(
            group=spec["group"],
            versions=[v["name"] for v in served],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=list(names.get("shortNames") or []),
            categories=list(names.get("categories") or []),
            status_subresource=any("status" in (v.get("subresources") or {}) for v in served),
            schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in served},
            printer_columns={v["name"]: v.get("additionalPrinterColumns") or [] for v in served},
            crd=True,
        )
        self.types[rtype.key] = rtype
        # The real server reports acceptance in status; kopf and kubectl wait for Established.
        meta = crd["metadata"]
        key = ("", meta["name"])
        stored = self.store[("apiextensions.k8s.io", "customresourcedefinitions")].get(key)
        if stored is not None and not (stored.get("status") or {}).get("acceptedNames"):
            cond_time = now_rfc3339()
            old = stored
            stored = copy.deepcopy(stored)
            stored["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": cond_time,
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": cond_time,
                    },
                ],
                "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            }
            stored["metadata"]["resourceVersion"] = str(self._next_rv())
            self.store[("apiextensions.k8s.io", "customresourcedefinitions")][key] = stored
            self._emit("MODIFIED", self.types[("apiextensions.k8s.io", "customresourcedefinitions")], stored, old)

    def _unserve_crd(self, crd: Obj) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rtype = self.types.get(key)
        if rtype is None:
            return
        for obj in list(self.store[key].values()):
            self._remove(rtype, obj)
        del self.types[key]
        for w in list(self._watchers):
            if w.rkey == key:
                w.queue.put_nowait(None)  # a real server ends watches of a resource it stops serving

    # -- rendering -------------------------------------------------------

    @staticmethod
    def _render(rtype: ResourceType, obj: Obj, version: str | None) -> Obj:
        if rtype.crd and version and obj.get("apiVersion") != rtype.api_version(version):
            obj = {**obj, "apiVersion": rtype.api_version(version)}
        return obj

    def _table(self, rtype: ResourceType, version: str, items: list[Obj], include: str, rv: str) -> Obj:
        columns: list[Obj] = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name must be unique within a namespace.",
                "priority": 0,
            }
        ]
        getters: list[Callable[[Obj], Any]] = [lambda o: o["metadata"]["name"]]
        if rtype.crd:
            defs = rtype.printer_columns.get(version) or [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
            for col in defs:
                columns.append(
                    {
                        "name": col["name"],
                        "type": col.get("type", "string"),
                        "format": col.get("format", ""),
                        "description": col.get("description", ""),
                        "priority": col.get("priority", 0),
                    }
                )

                def getter(o: Obj, c: Obj = col) -> Any:
                    value = _jsonpath(o, c["jsonPath"])
                    if value is None:
                        return None
                    if c.get("type") == "date" and isinstance(value, str):
                        try:
                            return human_duration(
                                (datetime.datetime.now(datetime.UTC) - parse_rfc3339(value)).total_seconds()
                            )
                        except ValueError:
                            return value
                    if isinstance(value, (dict, list)):
                        return json.dumps(value)
                    return value

                getters.append(getter)
        else:
            for name, typ, fn, prio in _BUILTIN_COLUMNS.get(rtype.key, [("Age", "string", _age, 0)]):
                columns.append({"name": name, "type": typ, "format": "", "description": name, "priority": prio})
                getters.append(fn)
        rows = []
        for o in items:
            row: Obj = {"cells": [g(o) for g in getters]}
            if include == "Object":
                row["object"] = self._render(rtype, o, version)
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": columns,
            "rows": rows,
        }

    # -- discovery --------------------------------------------------------

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self.types.values():
            if t.group:
                for v in t.versions:
                    if v not in groups.setdefault(t.group, []):
                        groups[t.group].append(v)
        return groups

    def _resource_list(self, group: str, version: str) -> Obj | None:
        resources = []
        for t in sorted(self.types.values(), key=lambda t: t.plural):
            if t.group != group or version not in t.versions:
                continue
            entry: Obj = {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }
            if t.short_names:
                entry["shortNames"] = t.short_names
            if t.categories:
                entry["categories"] = t.categories
            resources.append(entry)
            if t.status_subresource:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if "eviction" in t.extra_subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/eviction",
                        "singularName": "",
                        "namespaced": True,
                        "group": "policy",
                        "version": "v1",
                        "kind": "Eviction",
                        "verbs": ["create"],
                    }
                )
            if "log" in t.extra_subresources:
                resources.append(
                    {"name": f"{t.plural}/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
                )
            if "binding" in t.extra_subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/binding",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "Binding",
                        "verbs": ["create"],
                    }
                )
        if not resources:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _openapi_v3(self, rest: list[str]) -> web.Response:
        """Just enough OpenAPI v3 for kubectl to see that we do server-side field validation.

        kubectl (strict validation, its default) looks for a PATCH operation with the
        object's x-kubernetes-group-version-kind and a `fieldValidation` parameter; if it
        finds one, it sends `?fieldValidation=Strict` and leaves validation to us.
        No schemas are published (`kubectl explain` will not work).
        """
        gvs: dict[str, list[ResourceType]] = {}
        for t in self.types.values():
            for v in t.versions:
                gvs.setdefault(f"apis/{t.group}/{v}" if t.group else f"api/{v}", []).append(t)
        if not rest:
            paths = {}
            for gv, types in sorted(gvs.items()):
                digest = (
                    hashlib.sha256(json.dumps(sorted((t.kind, t.plural) for t in types)).encode())
                    .hexdigest()[:16]
                    .upper()
                )
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
            return web.json_response({"paths": paths})
        gv = "/".join(rest)
        if gv not in gvs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        version = gv.rsplit("/", 1)[-1]
        paths = {}
        for t in gvs[gv]:
            base = (
                f"/{gv}/namespaces/{{namespace}}/{t.plural}/{{name}}" if t.namespaced else f"/{gv}/{t.plural}/{{name}}"
            )
            params = [
                {"name": n, "in": "query", "schema": {"type": "string"}}
                for n in ("dryRun", "fieldManager", "fieldValidation", "force")
            ]
            gvk = {"group": t.group, "version": version, "kind": t.kind}
            op = {
                "operationId": f"patch{t.kind}",
                "parameters": params,
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            }
            paths[base] = {"patch": op, "put": {**op, "operationId": f"replace{t.kind}", "x-kubernetes-action": "put"}}
        return web.json_response(
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.32.0"},
                "paths": paths,
                "components": {"schemas": {}},
            }
        )

    # -- HTTP ---------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        while loop.time() < self.faults.paused_until:
            await asyncio.sleep(min(0.05, self.faults.paused_until - loop.time()))
        verb, resource = self._classify(request)
        agent = request.headers.get("User-Agent", "").split("/")[0].split(" ")[0]
        self.requests[(verb, resource)] += 1
        self.requests_by_agent[(agent, verb, resource)] += 1
        refusal = self._authenticate_and_authorize(request)
        rule = self.faults._take(request) if refusal is None else None
        if refusal is not None:
            resp: web.StreamResponse = web.json_response(refusal.status(), status=refusal.code)
        elif rule is not None:
            reason = "TooManyRequests" if rule.status == 429 else "InternalError"
            err = ApiError(rule.status, reason, f"injected fault: {rule.status}")
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            resp = web.json_response(err.status(), status=rule.status, headers=headers)
        else:
            try:
                resp = await handler(request)
            except ApiError as e:
                resp = web.json_response(e.status(), status=e.code)
        self.request_log.append((request.method, request.path_qs, agent, resp.status))
        return resp

    def _authenticate_and_authorize(self, request: web.Request) -> ApiError | None:
        """None if the request may go on; else the 401/403 the real server answers (and a denial noted)."""
        if not self.authenticate:
            return None

        def alive(uid: str) -> bool:
            key = self.uids.get(uid)
            return key is not None and key[1:] in self.store[key[0]]

        user = self.tokens.authenticate(request.headers.get("Authorization"), alive)
        if user is None:
            self.denials.append(("", f"{request.method} {request.path}", 401))
            return ApiError(401, "Unauthorized", "Unauthorized")
        attrs = self._attributes(request)
        if authorize(user, attrs, self._rbac_objects):
            return None
        what = attrs.describe()
        self.denials.append((user.username, what, 403))
        if not attrs.resource:
            return ApiError(403, "Forbidden", f'forbidden: User "{user.username}" {what}')
        qualified = attrs.resource if not attrs.group else f"{attrs.resource}.{attrs.group}"
        named = f' "{attrs.name}"' if attrs.name else ""
        details: Obj = {
            "kind": attrs.resource,
            **({"group": attrs.group} if attrs.group else {}),
            **({"name": attrs.name} if attrs.name else {}),
        }
        return ApiError(403, "Forbidden", f'{qualified}{named} is forbidden: User "{user.username}" {what}', details)

    def _attributes(self, request: web.Request) -> RequestAttributes:
        path = request.path.rstrip("/") or "/"
        verb, _ = self._classify(request)
        try:
            parsed = self._parse_path(path)
        except ApiError:
            parsed = None
        if parsed is None:
            return RequestAttributes(
                verb="get" if request.method in ("GET", "HEAD") else request.method.lower(), path=path
            )
        rtype, ns, name, sub, _ = parsed
        if rtype.key == ("", "namespaces") and name:
            ns = name  # a namespace's own object is judged inside that namespace, as on a real server
        return RequestAttributes(
            verb=verb,
            namespace=ns,
            group=rtype.group,
            resource=rtype.plural,
            subresource=sub or "",
            name=name or "",
            path=path,
        )

    def _rbac_objects(self, plural: str, namespace: str | None) -> list[Obj]:
        return [o for (ns, _), o in self.store[(RBAC_GROUP, plural)].items() if namespace is None or ns == namespace]

    def token_request(self, ns: str, name: str, body: Obj) -> Obj:
        """The TokenRequest API: a token for ServiceAccount `ns/name`, optionally bound to a pod."""
        self._get(self.types[("", "serviceaccounts")], ns, name)  # 404 if the account does not exist
        spec = dict((body or {}).get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise ApiError(
                422, "Invalid", "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes"
            )
        extra: dict[str, tuple[str, ...]] = {}
        bound_uid = None
        ref = spec.get("boundObjectRef")
        if ref:
            if ref.get("kind") != "Pod":
                raise ApiError(
                    400, "BadRequest", f"cannot bind token to object of kind {ref.get('kind')!r} (emulated: Pod)"
                )
            pod = self._get(self.types[("", "pods")], ns, ref.get("name", ""))
            if ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"the UID in the bound object reference ({ref['uid']}) does not match "
                    f"the UID in record. The object might have been deleted and then recreated",
                )
            bound_uid = pod["metadata"]["uid"]
            extra = {EXTRA_POD_NAME: (pod["metadata"]["name"],), EXTRA_POD_UID: (bound_uid,)}
        token = self.tokens.issue(service_account_user(ns, name, extra), seconds, bound_uid)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": now_rfc3339(seconds)},
        }

    def _classify(self, request: web.Request) -> tuple[str, str]:
        try:
            parsed = self._parse_path(request.path)
        except ApiError:
            return (request.method.lower(), request.path)
        if parsed is None:
            return ("get", "discovery")
        rtype, _, name, sub, _ = parsed
        resource = rtype.plural + (f"/{sub}" if sub else "")
        method = request.method
        watch = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
        if method == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        else:
            verb = {
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection",
            }.get(method, method.lower())
        return (verb, resource)

    def _parse_path(self, path: str) -> tuple[ResourceType, str | None, str | None, str | None, str] | None:
        """Split a resource URL into (type, namespace, name, subresource, version); None for discovery."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        if rest[0] == "watch":
            rest = rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = self.types.get((group, rest[2]))
            if cand is not None and cand.namespaced and version in cand.versions:
                ns, rest = rest[1], rest[2:]
        rtype = self.types.get((group, rest[0]))
        if rtype is None or version not in rtype.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not ((sub == "status" and rtype.status_subresource) or sub in rtype.extra_subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype, ns, name, sub, version

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return web.json_response(
                {
                    "major": "1",
                    "minor": "32",
                    "gitVersion": "v1.32.0-respawn-emulator",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.23.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/api":
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if path == "/apis":
            groups = []
            for g, versions in sorted(self._groups().items()):
                vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
                groups.append({"name": g, "versions": vs, "preferredVersion": vs[0]})
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis":
            versions = self._groups().get(parts[1])
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            vs = [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in versions]
            return web.json_response(
                {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": vs, "preferredVersion": vs[0]}
            )
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            body = self._resource_list(group, version)
            if body is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(body)
        if parts and parts[0] == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            return self._openapi_v3(parts[2:])
        parsed = self._parse_path(path)
        if parsed is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype, ns, name, sub, version = parsed
        q = request.query
        method = request.method
        _field_validation.set(q.get("fieldValidation"))
        if q.get("dryRun") and method != "GET":
            # Refuse rather than silently applying a change the client believes is a dry run.
            raise ApiError(400, "BadRequest", "dryRun is not supported by the respawn API emulator")
        watch = q.get("watch") in ("true", "1") or "/watch/" in path
        if method == "GET" and (watch or name is None):
            if watch:
                return await self._watch(request, rtype, ns, name, version)
            items = self._list(rtype, ns, q.get("labelSelector"), q.get("fieldSelector"))
            rv = str(self.rv)
            if _wants_table(request):
                return web.json_response(self._table(rtype, version, items, q.get("includeObject", "Metadata"), rv))
            return web.json_response(
                {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version(version),
                    "metadata": {"resourceVersion": rv},
                    "items": [self._render(rtype, o, version) for o in items],
                }
            )
        if name is None:
            if method == "POST":
                body = await _json_body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
                obj = self._create(rtype, ns, body, version)
                return web.json_response(self._render(rtype, obj, version), status=201)
            if method == "DELETE":
                options = await _delete_options(request)
                items = self._list(rtype, ns, q.get("labelSelector"), q.get("fieldSelector"))
                for o in items:
                    try:
                        self._delete(rtype, o["metadata"].get("namespace"), o["metadata"]["name"], options)
                    except ApiError:
                        pass
                return web.json_response(
                    {
                        "kind": f"{rtype.kind}List",
                        "apiVersion": rtype.api_version(version),
                        "metadata": {"resourceVersion": str(self.rv)},
                        "items": items,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if rtype.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "log":
            return await self._log(rtype, ns, name, request)
        if sub == "eviction":
            if method != "POST":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            body = await _json_body(request)
            self.evict(ns or "", name, (body or {}).get("deleteOptions") or {})
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201
            )
        if sub == "token":
            if method != "POST":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            body = await _json_body(request)
            return web.json_response(
                self.token_request(ns or "", name, body if isinstance(body, dict) else {}), status=201
            )
        if sub == "binding":
            if method != "POST":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            body = await _json_body(request)
            self.bind(ns or "", name, ((body or {}).get("target") or {}).get("name", ""))
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201
            )
        if method == "GET":
            obj = self._get(rtype, ns, name)
            if _wants_table(request):
                return web.json_response(
                    self._table(
                        rtype, version, [obj], q.get("includeObject", "Metadata"), obj["metadata"]["resourceVersion"]
                    )
                )
            return web.json_response(self._render(rtype, obj, version))
        if method == "PUT":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            obj = self._update(rtype, ns, name, body, sub, version)
            return web.json_response(self._render(rtype, obj, version))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype not in _PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {', '.join(_PATCH_TYPES)}",
                )
            body = await _json_body(request)
            obj = self._patch(rtype, ns, name, _PATCH_TYPES[ctype], body, sub, version)
            return web.json_response(self._render(rtype, obj, version))
        if method == "DELETE":
            if sub:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            options = await _delete_options(request)
            obj = self._delete(rtype, ns, name, options)
            return web.json_response(self._render(rtype, obj, version))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _log(self, rtype: ResourceType, ns: str | None, name: str, request: web.Request) -> web.StreamResponse:
        """pods/log from the simulator's log file; `follow=true` streams until the pod ends."""
        pod = self._get(rtype, ns, name)
        uid = pod["metadata"]["uid"]
        path = (pod["metadata"].get("annotations") or {}).get("respawn.dev/sim-log")
        data = b""
        if path:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
        tail = request.query.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(data)
        offset = len(data) if not tail else None
        if offset is None and path:
            try:
                with open(path, "rb") as f:
                    offset = len(f.read())
            except OSError:
                offset = 0
        while not self._stopping:
            current = self.store[rtype.key].get((ns or "", name))
            done = (
                current is None
                or current["metadata"]["uid"] != uid
                or (current.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            )
            path = path or ((current or {}).get("metadata", {}).get("annotations") or {}).get("respawn.dev/sim-log")
            if path:
                try:
                    with open(path, "rb") as f:
                        f.seek(offset or 0)
                        chunk = f.read()
                except OSError:
                    chunk = b""
                if chunk:
                    offset = (offset or 0) + len(chunk)
                    try:
                        await resp.write(chunk)
                    except (ConnectionResetError, RuntimeError):
                        break
            if done:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.1)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    def evict(self, ns: str, name: str, delete_options: Obj | None = None) -> Obj:
        """The pods/eviction subresource: mark DisruptionTarget, then delete gracefully."""
        pods = self.types[("", "pods")]
        pod = self._get(pods, ns, name)
        if not pod["metadata"].get("deletionTimestamp"):
            cond = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": now_rfc3339(),
            }
            conds = [
                c for c in pod.get("status", {}).get("conditions", []) or [] if c.get("type") != "DisruptionTarget"
            ]
            self._patch(pods, ns, name, "merge", {"status": {"conditions": [*conds, cond]}}, "status")
        return self._delete(pods, ns, name, delete_options or {})

    def bind(self, ns: str, name: str, node: str) -> Obj:
        """The pods/binding subresource: set spec.nodeName once."""
        pods = self.types[("", "pods")]
        pod = self._get(pods, ns, name)
        if pod.get("spec", {}).get("nodeName"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conds = [c for c in new.get("status", {}).get("conditions", []) or [] if c.get("type") != "PodScheduled"]
        new.setdefault("status", {})["conditions"] = [
            *conds,
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()},
        ]
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.store[pods.key][(ns, name)] = new
        self._emit("MODIFIED", pods, new, pod)
        return new

    async def _watch(
        self, request: web.Request, rtype: ResourceType, ns: str | None, name: str | None, version: str
    ) -> web.StreamResponse:
        q = request.query
        field_selector = q.get("fieldSelector")
        if name:  # legacy /watch/namespaces/ns/pods/name
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(field_selector, rtype.field_selectors)
        namespace = ns if rtype.namespaced else None

        def matches(o: Obj | None) -> bool:
            return o is not None and lsel(o["metadata"].get("labels") or {}) and fsel(o)

        rv_param = q.get("resourceVersion", "")
        watcher = _Watcher(rtype.key, namespace, asyncio.Queue())
        backlog: list[tuple[str, Obj]] = []
        if rv_param in ("", "0"):
            for o in self._list(rtype, namespace):
                if matches(o):
                    backlog.append(("ADDED", o))
        else:
            try:
                since = int(rv_param)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {rv_param!r}") from None
            if since < self.compacted_rv:
                self.expired_watches += 1
                backlog.append(
                    (
                        "ERROR",
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({self.compacted_rv + 1})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    )
                )
            else:
                for ev in self.history:
                    if (
                        ev.rv > since
                        and ev.rkey == rtype.key
                        and (namespace is None or ev.obj["metadata"].get("namespace") == namespace)
                    ):
                        watcher.queue.put_nowait(ev)
        expired = bool(backlog) and backlog[0][0] == "ERROR"
        if not expired:
            self._watchers.add(watcher)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        as_table = _wants_table(request)
        headers_sent = False

        def render(o: Obj) -> Obj:
            # `kubectl get -w` watches in Table form: one row per event, columns once.
            nonlocal headers_sent
            if not as_table:
                return self._render(rtype, o, version)
            table = self._table(
                rtype, version, [o], q.get("includeObject", "Metadata"), o["metadata"]["resourceVersion"]
            )
            if headers_sent:
                table["columnDefinitions"] = []
            headers_sent = True
            return table

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        timeout = q.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        try:
            await resp.prepare(request)
            for etype, o in backlog:
                obj = o if etype == "ERROR" else render(o)
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            if expired:
                return resp
            last_bookmark = loop.time()
            while True:
                wait = (
                    min(1.0, self.bookmark_interval)
                    if deadline is None
                    else min(1.0, self.bookmark_interval, deadline - loop.time())
                )
                if wait <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    if bookmarks and loop.time() - last_bookmark >= self.bookmark_interval:
                        last_bookmark = loop.time()
                        await resp.write(
                            json.dumps(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": rtype.kind,
                                        "apiVersion": rtype.api_version(version),
                                        "metadata": {"resourceVersion": str(self.rv)},
                                    },
                                }
                            ).encode()
                            + b"\n"
                        )
                    continue
                if ev is None:
                    break
                now_match, was_match = matches(ev.obj), matches(ev.old)
                etype = ev.type
                if etype == "MODIFIED" and ev.old is not None and was_match and not now_match:
                    etype = "DELETED"
                elif etype == "MODIFIED" and ev.old is not None and now_match and not was_match:
                    etype = "ADDED"
                elif not now_match:
                    continue
                await resp.write(json.dumps({"type": etype, "object": render(ev.obj)}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _pod_spec_problems(spec: Any, field: str) -> list[Obj]:
    """What the real PodSpec validation refuses among the fields our builders write."""

    def bad(where: str, message: str, reason: str = "FieldValueInvalid") -> Obj:
        return {"reason": reason, "field": where, "message": message}

    if not isinstance(spec, dict):
        return [bad(field, "Required value", "FieldValueRequired")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [bad(f"{field}.containers", "Required value: a non-empty list of containers", "FieldValueRequired")]
    problems: list[Obj] = []
    names: set[str] = set()
    for i, ct in enumerate(containers):
        where = f"{field}.containers[{i}]"
        if not isinstance(ct, dict):
            problems.append(bad(where, "Invalid value: a container must be an object"))
            continue
        name = ct.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            problems.append(bad(f"{where}.name", f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 label"))
        elif name in names:
            problems.append(bad(f"{where}.name", f"Duplicate value: {json.dumps(name)}", "FieldValueDuplicate"))
        names.add(str(name))
        if not isinstance(ct.get("image"), str) or not ct["image"]:
            problems.append(bad(f"{where}.image", "Required value", "FieldValueRequired"))
        for key in ("command", "args"):
            value = ct.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                problems.append(bad(f"{where}.{key}", "Invalid value: a list of strings"))
        env = ct.get("env")
        if env is not None and not isinstance(env, list):
            problems.append(bad(f"{where}.env", "Invalid value: a list of EnvVar"))
            continue
        for j, var in enumerate(env or []):
            vname = var.get("name") if isinstance(var, dict) else None
            if not isinstance(vname, str) or not _ENV_NAME.fullmatch(vname):
                problems.append(
                    bad(
                        f"{where}.env[{j}].name",
                        f"Invalid value: {json.dumps(vname)}: a valid environment "
                        "variable name must consist of alphabetic characters, digits, '_', '-', or '.', "
                        "and must not start with a digit",
                    )
                )
    if spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
        problems.append(
            bad(
                f"{field}.restartPolicy",
                f"Unsupported value: {json.dumps(spec.get('restartPolicy'))}",
                "FieldValueNotSupported",
            )
        )
    return problems


def _strip_rv(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


async def _json_body(request: web.Request) -> Any:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype.startswith("application/vnd.kubernetes.protobuf"):
        return decode_protobuf(await request.read())
    if ctype == "application/cbor":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        )
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            import yaml

            return yaml.safe_load(raw)
        except Exception:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None


async def _delete_options(request: web.Request) -> Obj:
    body = await _json_body(request) or {}
    options: Obj = dict(body) if isinstance(body, dict) else {}
    q = request.query
    if "gracePeriodSeconds" in q:
        options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
    if "propagationPolicy" in q:
        options["propagationPolicy"] = q["propagationPolicy"]
    if "orphanDependents" in q:
        options["orphanDependents"] = q["orphanDependents"] == "true"
    return options


# ---------------------------------------------------------------------------
# Protobuf: the few kinds kubectl's typed commands send that way
# ---------------------------------------------------------------------------
#
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


# ---------------------------------------------------------------------------
# Running in a thread, for sync callers
# ---------------------------------------------------------------------------


class ApiServerThread:
    """Run an `ApiServer` in a background thread with its own event loop.

    The sync helpers (`get`, `list`, `create`, `patch`, `replace`, `delete`) go straight
    to the store on the server's loop (not over HTTP) and raise `ApiError` like the
    server would answer. `resource` is a plural, singular, kind, short name or
    `plural.group` (e.g. "pods", "job", "pipelineruns.respawn.dev").
    """

    def __init__(self, **server_kwargs: Any) -> None:
        self.server = ApiServer(**server_kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.faults = _ThreadFaults(self)

    def __enter__(self) -> ApiServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> str:
        """Start serving; return the URL."""
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as e:  # pragma: no cover
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="respawn-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self.url

    def stop(self) -> None:
        """Stop the server and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the server loop and return its result."""
        assert self._loop is not None

        async def wrapper() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    @property
    def admin_token(self) -> str:
        """Bearer token of the emulator's `system:masters` admin."""
        return self.server.admin_token

    @property
    def ca_file(self) -> str | None:
        """The CA that signs the emulator's certificate (None: plain HTTP)."""
        return self.server.tls.ca_file if self.server.tls else None

    @property
    def denials(self) -> list[tuple[str, str, int]]:
        """Requests refused so far as (user, what, 401/403)."""
        return self.call(lambda: list(self.server.denials))  # type: ignore[no-any-return]

    def write_kubeconfig(self, path: str, namespace: str = "default", token: str | None = None) -> str:
        """Write a kubeconfig for this server: the admin's token unless another is given."""
        import yaml

        cluster: Obj = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "respawn-local",
            "clusters": [{"name": "respawn-local", "cluster": cluster}],
            "users": [{"name": "respawn-local", "user": {"token": token or self.admin_token}}],
            "contexts": [
                {
                    "name": "respawn-local",
                    "context": {"cluster": "respawn-local", "user": "respawn-local", "namespace": namespace},
                }
            ],
        }
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    def service_account_token(
        self, namespace: str, name: str, pod: str | None = None, expiration_seconds: int = 3600
    ) -> str:
        """A TokenRequest token for ServiceAccount `namespace/name` (bound to `pod` if given)."""
        spec: Obj = {"expirationSeconds": expiration_seconds}
        if pod:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod}
        result = self.call(self.server.token_request, namespace, name, {"spec": spec})
        return str(result["status"]["token"])

    # -- sync store helpers ------------------------------------------------

    def get(self, resource: str, name: str, namespace: str | None = "default") -> Obj:
        """One object (a deep copy); raises ApiError 404."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._get(rtype, namespace if rtype.namespaced else "", name))

        return self.call(op)  # type: ignore[no-any-return]

    def get_or_none(self, resource: str, name: str, namespace: str | None = "default") -> Obj | None:
        """Like `get`, None when absent."""
        try:
            return self.get(resource, name, namespace)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """Objects of a type (all namespaces when namespace is None)."""

        def op() -> list[Obj]:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._list(rtype, namespace, label_selector, field_selector))

        return self.call(op)  # type: ignore[no-any-return]

    def create(self, body: Obj, namespace: str | None = None) -> Obj:
        """Create from a manifest (apiVersion/kind pick the type)."""

        def op() -> Obj:
            rtype = self.server.type_for(body["apiVersion"], body["kind"])
            ns = namespace or (body.get("metadata") or {}).get("namespace") or ("default" if rtype.namespaced else None)
            version = body["apiVersion"].rsplit("/", 1)[-1]
            obj = self.server._create(rtype, ns, body, version)
            return copy.deepcopy(obj)

        return self.call(op)  # type: ignore[no-any-return]

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = "default",
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> Obj:
        """Patch ("merge", "json" or "strategic"); subresource="status" for /status."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._patch(rtype, namespace, name, patch_type, patch, subresource))

        return self.call(op)  # type: ignore[no-any-return]

    def replace(
        self, resource: str, name: str, body: Obj, namespace: str | None = "default", subresource: str | None = None
    ) -> Obj:
        """PUT semantics (409 on a stale metadata.resourceVersion)."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._update(rtype, namespace, name, body, subresource))

        return self.call(op)  # type: ignore[no-any-return]

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = "default",
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> Obj:
        """DELETE with the same options the HTTP API takes."""
        options: Obj = {}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._delete(rtype, namespace, name, options))

        return self.call(op)  # type: ignore[no-any-return]

    def request_counts(self, agent: str | None = None) -> dict[tuple[str, str], int]:
        """Requests by (verb, resource) so far; only those from `agent` (User-Agent product) if given."""

        def op() -> dict[tuple[str, str], int]:
            if agent is None:
                return dict(self.server.requests)
            return {(v, r): n for (a, v, r), n in self.server.requests_by_agent.items() if a == agent}

        return self.call(op)  # type: ignore[no-any-return]

    def reset_counts(self) -> None:
        """Zero the request counters (e.g. between benchmark runs)."""

        def op() -> None:
            self.server.requests.clear()
            self.server.requests_by_agent.clear()

        self.call(op)


class _ThreadFaults:
    """`Faults`, callable from any thread."""

    def __init__(self, owner: ApiServerThread) -> None:
        self._owner = owner

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        match: Callable[[web.Request], bool] | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """See `Faults.fail_next`."""
        return self._owner.call(self._owner.server.faults.fail_next, count, status, match, retry_after)  # type: ignore[no-any-return]

    def close_watches(self) -> int:
        """See `Faults.close_watches`."""
        return self._owner.call(self._owner.server.faults.close_watches)  # type: ignore[no-any-return]

    def pause(self, seconds: float, refuse: bool = False) -> None:
        """See `Faults.pause` (returns at once; the pause runs on the server)."""
        self._owner.call(self._owner.server.faults.pause, seconds, refuse)

    @property
    def injected(self) -> int:
        """How many requests got an injected failure."""
        return self._owner.server.faults.injected

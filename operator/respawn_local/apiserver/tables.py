"""Table rendering for `kubectl get` (built-in columns, CRD printer columns)."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import Obj, human_duration, parse_rfc3339
from respawn_local.apiserver.resources import ResourceType


# Built-in tables for `kubectl get` (a small subset of what the real printers show).
def _age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - parse_rfc3339(ts)).total_seconds())


def _pod_status(pod: Obj) -> str:
    st = pod.get("status", {})
    reason: str = st.get("reason") or st.get("phase", "Pending")
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
            shown: str = {"FailureTarget": "FailureTarget"}.get(cond["type"], cond["type"])
            return shown
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


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


class TablesMixin(ServerBase):
    """`ApiServer`'s rendering of objects: the served apiVersion, Table answers."""

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

"""Helpers shared by the emulator tests: a test CRD, raw HTTP, waiting with deadlines."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

PY = sys.executable

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.respawn.dev"},
    "spec": {
        "group": "test.respawn.dev",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["testing"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0, "maximum": 100},
                                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                    "nick": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$"},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                    "items": {"type": "array", "items": {"type": "integer"}},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, size: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "test.respawn.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


def auth_header(api: Any) -> dict[str, str]:
    """The emulator admin's Authorization header."""
    return {"Authorization": f"Bearer {api.admin_token}"}


def tls(api: Any) -> ssl.SSLContext | None:
    """An SSL context trusting the emulator's CA (None for a plain-http emulator)."""
    return ssl.create_default_context(cafile=api.ca_file) if api.ca_file else None


def http(
    api: Any,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    token: str | None = None,
) -> tuple[int, Any]:
    """One raw request as the emulator's admin (or as `token`'s owner; token="" sends none).

    Returns (status, parsed JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": content_type, "Accept": accept}
    bearer = api.admin_token if token is None else token
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=tls(api)) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def job_manifest(name: str, code: str, backoff_limit: int = 0, **spec: Any) -> dict[str, Any]:
    """A batch/v1 Job whose container runs `python -c code`."""
    container = {
        "name": "main",
        "image": "python",
        "command": [PY, "-c", code],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "podReplacementPolicy": "Failed",
            "template": {
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container]}
            },
            **spec,
        },
    }


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            found: dict[str, Any] = c
            return found
    return None


def the_condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    """The condition of type `ctype`, which `obj` must have."""
    found = condition(obj, ctype)
    assert found is not None, f"no {ctype} condition in {obj}"
    return found

"""core/v1 Events on PipelineRuns: the manifest, built without I/O (the executor posts it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from respawn_operator import GROUP, VERSION
from respawn_operator.timeutil import fmt

MAX_MESSAGE = 1024
"""What an Event's message keeps (the API server refuses longer ones)."""


def build_event(body: dict[str, Any], type_: str, reason: str, message: str, at: dt.datetime) -> dict[str, Any]:
    """The Event that `kubectl describe pipelinerun` lists for ``body``: ``type_`` is
    Normal or Warning, ``reason`` one CamelCase word (reconcile.py's events)."""
    meta = body["metadata"]
    stamp = fmt(at)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": body.get("kind", "PipelineRun"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": "respawn-operator"},
        "reportingComponent": "respawn.dev/operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }

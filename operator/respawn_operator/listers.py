"""What the operator keeps from its watches, so a reconcile reads memory, not the API.

`PodCache` keeps each attempt's pod, also after it is deleted; `ChildIndex` keeps a fan-out
parent's children. Both are fed by the kopf event handlers (handlers.py) and read by the
reconciler (reconciler.py).
"""

from __future__ import annotations

import time
from typing import Any

from respawn_operator.fanout import LABEL_PARENT_UID


class PodCache:
    """The last state of each attempt's pod, kept after the pod is deleted.

    A pod deleted by someone else (or garbage-collected) vanishes from the API; its last
    watched state still says how it ended.
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str, str], tuple[dict[str, Any], bool]] = {}

    def store(self, namespace: str, uid: str, attempt: str, pod: dict[str, Any], gone: bool) -> None:
        self._pods[(namespace, uid, attempt)] = (pod, gone)
        if attempt.isdigit():  # attempt N exists only once N-1 was classified: drop the older ones
            for key in [
                k for k in self._pods if k[:2] == (namespace, uid) and k[2].isdigit() and int(k[2]) < int(attempt)
            ]:
                del self._pods[key]

    def get(self, namespace: str, uid: str, attempt: int) -> tuple[dict[str, Any], bool] | None:
        return self._pods.get((namespace, uid, str(attempt)))

    def forget(self, namespace: str, uid: str) -> None:
        for key in [k for k in self._pods if k[0] == namespace and k[1] == uid]:
            del self._pods[key]


class ChildIndex:
    """Fan-out children by parent uid, kept from the PipelineRun watch (a lister).

    A parent reads its children here instead of listing them every round, which at
    thousands of items was one request and O(items) bytes a round. The first round of
    each parent after a start lists them once (the watch may not have delivered every
    child yet) and merges the answer; from then on watch events keep it current, and a
    parent lists again every `relist_seconds` as a resync. A child the parent created an
    instant ago may be missing for that instant: creating it again answers AlreadyExists.
    """

    def __init__(self, relist_seconds: float = 300.0) -> None:
        self.relist_seconds = relist_seconds
        self._children: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}
        """parent uid -> child name -> (its newest object, when it arrived)."""
        self._listed: dict[str, float] = {}
        """parent uid -> when its children were last listed."""

    def note(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """Take in a watch event of any run; only fan-out children are kept."""
        meta = obj.get("metadata") or {}
        parent = (meta.get("labels") or {}).get(LABEL_PARENT_UID)
        if not parent or not meta.get("name"):
            return
        if deleted:
            self._children.get(parent, {}).pop(meta["name"], None)
        else:
            self._children.setdefault(parent, {})[meta["name"]] = (obj, time.monotonic())

    def children(self, parent_uid: str) -> list[dict[str, Any]] | None:
        """The parent's children, or None when they must be listed first (see `merge_listed`)."""
        listed = self._listed.get(parent_uid)
        if listed is None or time.monotonic() - listed > self.relist_seconds:
            return None
        return [obj for obj, _ in self._children.get(parent_uid, {}).values()]

    def merge_listed(self, parent_uid: str, items: list[dict[str, Any]], started: float) -> list[dict[str, Any]]:
        """Merge a LIST begun at `started` (monotonic): a child's newer watched state wins,
        and a child the list lacks stays only if its event came after the list began."""
        known = self._children.get(parent_uid, {})
        merged: dict[str, tuple[dict[str, Any], float]] = {}
        for obj in items:
            name = obj["metadata"]["name"]
            mine = known.get(name)
            newer = mine is not None and _rv(mine[0]) >= _rv(obj) and mine[1] >= started
            merged[name] = mine if newer and mine is not None else (obj, started)
        for name, (obj, arrived) in known.items():
            if name not in merged and arrived > started:
                merged[name] = (obj, arrived)
        self._children[parent_uid] = merged
        self._listed[parent_uid] = time.monotonic()
        return [obj for obj, _ in merged.values()]

    def forget(self, parent_uid: str) -> None:
        self._children.pop(parent_uid, None)
        self._listed.pop(parent_uid, None)


def _rv(obj: dict[str, Any]) -> int:
    """A resourceVersion as a number where it is one (etcd's are); -1 where it is not."""
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(rv) if rv.isdigit() else -1

"""What the operator keeps from its watches, so a reconcile reads memory, not the API.

`PodCache` keeps each attempt's pods, also after they are deleted; `ChildIndex` keeps a
fan-out parent's children. Both are fed by the kopf event handlers (handlers.py), listed
once and then every so often to catch what a watch missed, and read by the reconciler
(reconciler.py). `NodeCache` keeps node lookups for a few seconds.
"""

from __future__ import annotations

import time
from typing import Any

from respawn_operator.fanout import LABEL_PARENT_UID

PodEntry = tuple[dict[str, Any], bool, float]
"""(the pod as last seen, whether it is gone from the API, when that was seen: monotonic)."""


class PodCache:
    """Each attempt's pods from the pod watch (a lister), kept after they are deleted.

    A round reads the current attempt's pods here instead of listing them. A look at an
    attempt the watch has said nothing about yet lists them once, and so does the first
    look `relist_seconds` after the last list (or the first watched pod): the answer is
    merged (a pod deleted while the watch was down sends no event, so a pod the list lacks
    that was seen before the list began is gone). A pod deleted by someone else (or
    garbage-collected) vanishes from the API; its last watched state still says how it
    ended. Finished runs are forgotten.
    """

    def __init__(self, relist_seconds: float = 15.0) -> None:
        self.relist_seconds = relist_seconds
        self._runs: dict[tuple[str, str], dict[str, dict[str, PodEntry]]] = {}
        """(namespace, run uid) -> attempt -> pod name -> entry."""
        self._listed: dict[tuple[str, str, str], float] = {}

    def store(self, namespace: str, uid: str, attempt: str, pod: dict[str, Any], gone: bool) -> None:
        attempts = self._runs.setdefault((namespace, uid), {})
        if attempt.isdigit():  # attempt N exists only once N-1 was classified: drop the older ones
            for older in [a for a in attempts if a.isdigit() and int(a) < int(attempt)]:
                del attempts[older]
                self._listed.pop((namespace, uid, older), None)
        name = (pod.get("metadata") or {}).get("name") or ""
        attempts.setdefault(attempt, {})[name] = (pod, gone, time.monotonic())

    def get(self, namespace: str, uid: str, attempt: int) -> list[tuple[dict[str, Any], bool]] | None:
        """The attempt's pods as (pod, gone), or None when they must be listed first (`merge_listed`):
        nothing was watched or listed for the attempt yet, or the last list (else the first
        watched pod) is older than `relist_seconds`."""
        entries = (self._runs.get((namespace, uid)) or {}).get(str(attempt)) or {}
        since = self._listed.get((namespace, uid, str(attempt)))
        if since is None and entries:
            since = min(seen for _, _, seen in entries.values())  # the watch delivered it: it runs
        if since is None or time.monotonic() - since > self.relist_seconds:
            return None
        return [(pod, gone) for pod, gone, _ in sorted(entries.values(), key=lambda e: e[2])]

    def watched(self, namespace: str, uid: str, attempt: int) -> list[tuple[dict[str, Any], bool]]:
        """The attempt's pods as last seen, as (pod, gone), however old (no relist rule):
        what the work queue's urgency test reads between rounds."""
        entries = (self._runs.get((namespace, uid)) or {}).get(str(attempt)) or {}
        return [(pod, gone) for pod, gone, _ in entries.values()]

    def merge_listed(
        self, namespace: str, uid: str, attempt: int, items: list[dict[str, Any]], started: float
    ) -> list[tuple[dict[str, Any], bool]]:
        """Merge a LIST of the attempt's pods begun at `started` (monotonic), as ChildIndex does;
        a pod seen before the list began that it lacks is gone."""
        key = str(attempt)
        known = self._runs.setdefault((namespace, uid), {}).setdefault(key, {})
        merged: dict[str, PodEntry] = {}
        for pod in items:
            name = pod["metadata"]["name"]
            mine = known.get(name)
            # Seen since the list began (updated or deleted): newer than the list's copy.
            newer = mine is not None and mine[2] >= started and (mine[1] or _rv(mine[0]) >= _rv(pod))
            merged[name] = mine if newer and mine is not None else (pod, False, started)
        for name, (pod, gone, seen) in known.items():
            if name not in merged:
                merged[name] = (pod, gone or seen <= started, seen)
        known.clear()
        known.update(merged)
        self._listed[(namespace, uid, key)] = time.monotonic()
        # What was just listed, whatever `relist_seconds` is (0 would make `get` say "list again").
        return [(pod, gone) for pod, gone, _ in sorted(merged.values(), key=lambda e: e[2])]

    def forget(self, namespace: str, uid: str) -> None:
        for attempt in self._runs.pop((namespace, uid), {}):
            self._listed.pop((namespace, uid, attempt), None)


class NodeCache:
    """Nodes read by name, kept `ttl` seconds: the pods of many runs share a node, and a
    round needs only whether the node still exists and its labels (spot or not)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._nodes: dict[str, tuple[dict[str, Any] | None, float]] = {}

    def get(self, name: str) -> tuple[dict[str, Any] | None] | None:
        """(the node, or None if it does not exist), or None when it must be read."""
        hit = self._nodes.get(name)
        if hit is None or time.monotonic() - hit[1] > self.ttl:
            return None
        return (hit[0],)

    def put(self, name: str, node: dict[str, Any] | None) -> None:
        if len(self._nodes) > 10_000:  # a long-lived operator on a churning node pool
            self._nodes.clear()
        self._nodes[name] = (node, time.monotonic())


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

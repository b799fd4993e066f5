"""The runs as the reconciler knows them: from watch events and from its own status writes.

A round decides on the newest state of a run known *in order*, so it needs no GET: a watch
event, or the answer of our last status write. The two race (the echo of a write may come
before or after its answer), and kopf's own patches (finalizer, annotations) bump the
resourceVersion without changing anything a decision reads. `RunCache` sorts that out:
`note` says whether a watch event needs a round, `wrote` takes in a write's answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

Key = tuple[str, str]
"""(namespace, name) of a run."""
Facts = tuple[Any, ...]
Event = tuple[str | None, dict[str, Any]]
"""(resourceVersion, object) of a watch event."""


def run_facts(body: dict[str, Any]) -> Facts:
    """What a reconcile of a run depends on: uid, generation, deletion, spec and status.

    Everything else (resourceVersion, kopf's finalizer and annotations, labels,
    managedFields) changes nothing :func:`reconcile.decide` or the Job builder reads.
    """
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        body.get("spec"),
        body.get("status"),
    )


class RunCache:
    """Per-run state of the reconciler's view; every method is synchronous and cheap."""

    def __init__(self) -> None:
        self.known: set[Key] = set()
        """Runs that are not finished (resync and peering hand-overs look at these)."""
        self.bodies: dict[Key, dict[str, Any]] = {}
        """The newest state of each run known in order (watch events, our status writes),
        so a reconcile needs no GET. Absent: GET it. Read-only (kopf's event objects)."""
        self.pending: dict[Key, tuple[str | None, Facts]] = {}
        """A status write whose watch echo has not arrived: (its resourceVersion, the facts
        of the run it was decided on). Events until the echo are older than the write."""
        self.seen: dict[Key, Facts] = {}
        """The facts of the run as last reconciled (or as our status write left it): an
        event with the same facts (kopf's finalizer patch, our own echo) needs no round."""
        self.writing: dict[Key, list[Event]] = {}
        """Events of a run that arrived while its status write was in flight (sorted out
        when the write answers: the watch and the answer race)."""

    def note(self, key: Key, obj: dict[str, Any]) -> bool:
        """Take in a watch event's object of a run; ``True`` if it needs a reconcile."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        inflight = self.writing.get(key)
        if inflight is not None:
            inflight.append((rv, obj))
            return False  # the write's answer decides (a failed write reads the run afresh)
        facts = run_facts(obj)
        pending = self.pending.get(key)
        if pending is not None:
            written_rv, before = pending
            if (rv is not None and rv == written_rv) or facts == self.seen.get(key):
                del self.pending[key]  # the echo of our own status write (or what it wrote)
                self.bodies[key] = obj
                return False
            if facts == before:
                return False  # an event from before our write (e.g. kopf's finalizer patch)
            # Older or newer than our write? The watch cannot tell: read the run afresh.
            del self.pending[key]
            self.bodies.pop(key, None)
            return True
        self.bodies[key] = obj
        return facts != self.seen.get(key)

    def forget(self, key: Key) -> None:
        """The run is gone: drop what is known of it."""
        self.known.discard(key)
        self.bodies.pop(key, None)
        self.pending.pop(key, None)
        self.seen.pop(key, None)
        self.writing.pop(key, None)

    def reconciling(self, key: Key, body: dict[str, Any]) -> None:
        """A round decides on ``body`` now."""
        self.seen[key] = run_facts(body)

    def stale(self, key: Key) -> None:
        """Read the run afresh next round (after an error, or at a resync)."""
        self.bodies.pop(key, None)

    @contextlib.contextmanager
    def writing_status(self, key: Key) -> Iterator[list[Event]]:
        """While our status write is in flight, watch events of the run are collected here."""
        inflight: list[Event] = []
        self.writing[key] = inflight
        try:
            yield inflight
        finally:
            if self.writing.get(key) is inflight:
                del self.writing[key]

    def wrote(self, key: Key, body: dict[str, Any], written: dict[str, Any], inflight: list[Event]) -> bool:
        """Our status write answered with the whole run: the newest state, no GET needed.
        ``True``: the run changed while we decided, look again."""
        rv = (written.get("metadata") or {}).get("resourceVersion")
        if (written.get("metadata") or {}).get("uid") != body["metadata"].get("uid") or not rv:
            self.bodies.pop(key, None)  # not the run as stored: read it next time
            self.pending.pop(key, None)
            return False
        before, after = run_facts(body), run_facts(written)
        self.seen[key] = after
        if rv in [event_rv for event_rv, _ in inflight]:
            # The echo beat the answer: the events after it are newer still.
            self.pending.pop(key, None)
            newest = inflight[-1][1]
        else:
            # Every event so far is older than the write (the watch is ordered); until its
            # echo arrives, the answer is the newest state.
            self.pending[key] = (rv, before)
            newest = written
        self.bodies[key] = newest
        return after[:4] != before[:4] or run_facts(newest) != after

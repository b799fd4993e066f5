"""Is this replica the one that works? kopf's peering rule, for the operator's own loops.

kopf pauses its watches while a peer of higher (or equal) priority is alive, but the
reconciler's resync loop and delayed re-checks are ours, not kopf's: they ask this gate.
The rule is kopf 1.45's (``kopf/_core/engines/peering.py``, ``process_peering_event``):
a peer is dead once its ``lastseen`` + ``lifetime`` seconds is past; among the live peers
other than ourselves, one with a higher or the same priority pauses us.

Pure logic: the handlers GET the peering object and feed its status in (:meth:`PeeringGate.update`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from respawn_operator.timeutil import parse

log = logging.getLogger("respawn.operator")

CLUSTER = ""
"""The key of the cluster-wide peering state (a ClusterKopfPeering)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Active, or paused in favour of ``peer`` (the live peer of highest priority)."""

    active: bool
    peer: str | None = None
    priority: int | None = None


ACTIVE = Verdict(True)


def verdict(status: Mapping[str, Any] | None, identity: str, priority: int, now: dt.datetime) -> Verdict:
    """kopf's rule on the peering object's ``status`` (``{identity: {priority, lifetime, lastseen}}``)."""
    blockers: list[tuple[int, str]] = []
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        lastseen = parse(info.get("lastseen")) if info.get("lastseen") is not None else now
        if lastseen is None:
            continue  # unreadable: kopf could not parse it either
        if lastseen + dt.timedelta(seconds=int(info.get("lifetime", 60))) <= now:
            continue  # dead: its keep-alive expired
        peer_priority = int(info.get("priority", 0))
        if peer_priority >= priority:
            blockers.append((peer_priority, str(peer)))
    if not blockers:
        return ACTIVE
    top_priority, top = max(blockers)
    return Verdict(False, top, top_priority)


class PeeringGate:
    """The current verdict per peering object (one cluster-wide, or one per namespace).

    Disabled (``--standalone``, no ``--peering``): always active, never polled. Enabled: a
    namespace whose peering object was not read yet is paused, as kopf starts paused.
    """

    def __init__(
        self,
        *,
        identity: str = "",
        priority: int = 0,
        name: str | None = None,
        clusterwide: bool = True,
        namespaces: tuple[str, ...] = (),
        lifetime: int = 60,
    ) -> None:
        self.identity = identity
        self.priority = priority
        self.name = name
        self.clusterwide = clusterwide
        self.namespaces = namespaces
        self.interval = max(1.0, lifetime / 4)
        """Seconds between two reads of the peering object (and a paused run's next look)."""
        self._verdicts: dict[str, Verdict] = {}
        self.wanted: set[str] = set()
        """Keys asked about so far: the peering objects to read (namespaced: one per namespace)."""

    @property
    def enabled(self) -> bool:
        return self.name is not None

    def key(self, namespace: str) -> str:
        return CLUSTER if self.clusterwide else namespace

    def active(self, namespace: str) -> bool:
        """May this replica act on runs of ``namespace`` now?"""
        if not self.enabled:
            return True
        self.wanted.add(self.key(namespace))
        found = self._verdicts.get(self.key(namespace))
        return found is not None and found.active

    def objects(self) -> list[str]:
        """The peering objects to read: the cluster's, or one per served namespace named
        outright (not a glob) and per namespace a run was asked about in."""
        if not self.enabled:
            return []
        if self.clusterwide:
            return [CLUSTER]
        named = {ns for ns in self.namespaces if not any(c in ns for c in "*?[!")}
        return sorted(named | self.wanted)

    def current(self, key: str) -> Verdict | None:
        """The last verdict for ``key`` (``None``: not read yet)."""
        return self._verdicts.get(key)

    def update(self, key: str, status: Mapping[str, Any] | None, now: dt.datetime, *, missing: bool = False) -> Verdict:
        """Take in a read of the peering object for ``key``; log a change at INFO.

        ``missing``: the object does not exist; kopf's mandatory peering then pauses.
        """
        new = Verdict(False) if missing else verdict(status, self.identity, self.priority, now)
        old = self._verdicts.get(key)
        self._verdicts[key] = new
        if old is None or old.active != new.active:
            where = f" in {key}" if key else ""
            if new.active:
                log.info("peering: active%s", where)
            elif missing:
                log.info("peering: paused%s, peering object %s not found", where, self.name)
            else:
                log.info("peering: paused%s, %s has priority %s", where, new.peer, new.priority)
        return new


__all__ = ["ACTIVE", "CLUSTER", "PeeringGate", "Verdict", "verdict"]

"""A store wrapper that stops a process at a chosen storage operation, and counts them.

`RESPAWN_CHAOS_PAUSE_AT` names the moment, counted within this process:

* `artifact-before:N`: before the Nth artifact upload starts;
* `commit-before:N`: before the Nth commit is written (its artifacts are stored);
* `delete-before:N`: before the Nth delete (retiring or purging a checkpoint).

At that moment the process writes its pid to `RESPAWN_CHAOS_MARKER` and holds still
until the chaos engine kills it. When `RESPAWN_CHAOS_STATS` is set, the counts are
written there as JSON when the process ends, so the engine knows how many moments a
clean run has.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from ..storage.base import Store, local_puts

ENV_PAUSE_AT = "RESPAWN_CHAOS_PAUSE_AT"
ENV_MARKER = "RESPAWN_CHAOS_MARKER"
ENV_STATS = "RESPAWN_CHAOS_STATS"
MOMENTS = ("artifact-before", "commit-before", "delete-before")


class StoreWrapper:
    """Passes every call to `inner`; subclasses intercept what they need."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.local_puts = local_puts(inner)

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        self.inner.put(path, data, if_absent=if_absent)

    def get(self, path: str) -> bytes:
        return self.inner.get(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, path: str) -> None:
        self.inner.delete(path)


class PausingStore(StoreWrapper):
    """Stops at the moment named by $RESPAWN_CHAOS_PAUSE_AT; counts every operation."""

    def __init__(self, inner: Store, pause_at: str | None = None, marker: str | None = None) -> None:
        super().__init__(inner)
        self.counts = {"artifact": 0, "commit": 0, "delete": 0}
        self._lock = threading.Lock()
        kind, _, n = (pause_at or "").partition(":")
        self.pause = (kind.removesuffix("-before"), int(n)) if kind in MOMENTS and n.isdigit() else None
        self.marker = marker

    @classmethod
    def from_env(cls, inner: Store) -> PausingStore:
        return cls(inner, os.environ.get(ENV_PAUSE_AT), os.environ.get(ENV_MARKER))

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1
            hit = self.pause == (what, self.counts[what])
        if hit:
            if self.marker:
                with open(self.marker, "w") as f:
                    f.write(str(os.getpid()))
            while True:  # the engine kills this process here
                time.sleep(0.05)

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        if "/artifacts/" in path:
            self._count("artifact")
        elif "/commits/" in path:
            self._count("commit")
        super().put(path, data, if_absent=if_absent)

    def delete(self, path: str) -> None:
        self._count("delete")
        super().delete(path)

    def write_stats(self) -> None:
        path = os.environ.get(ENV_STATS)
        if path:
            with open(path, "w") as f:
                json.dump(self.counts, f)

"""In-memory store for unit tests: same guarantees as the others, within one process."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .base import NotFound, PreconditionFailed, check_path

_SHARED: dict[str, dict[str, bytes]] = {}
_LOCK = threading.Lock()


class MemoryStore:
    """`memory://name`: stores with the same name share their objects (one process)."""

    local_puts = True
    """base.local_puts: a put is a dict update."""

    def __init__(self, uri: str = "memory://default") -> None:
        self.uri = uri
        with _LOCK:
            self._objects = _SHARED.setdefault(uri.removeprefix("memory://"), {})

    def put(self, path: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        check_path(path)
        with _LOCK:
            if if_absent and path in self._objects:
                raise PreconditionFailed(path)
            self._objects[path] = bytes(data)

    def get(self, path: str) -> bytes:
        with _LOCK:
            try:
                return self._objects[check_path(path)]
            except KeyError:
                raise NotFound(path) from None

    def get_into(self, path: str, allocate: Callable[[int], memoryview]) -> int:
        """base.ReadsInto."""
        data = self.get(path)
        allocate(len(data)).cast("B")[:] = data
        return len(data)

    def exists(self, path: str) -> bool:
        with _LOCK:
            return check_path(path) in self._objects

    def list(self, prefix: str) -> list[str]:
        with _LOCK:
            return sorted(p for p in self._objects if p.startswith(prefix))

    def delete(self, path: str) -> None:
        with _LOCK:
            self._objects.pop(check_path(path), None)

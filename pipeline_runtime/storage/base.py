"""The one small interface every checkpoint store implements.

Paths are relative, '/'-separated, and never start with '/' or contain '..'.
Every backend gives the same guarantees:

* `put` is atomic: a reader sees the old bytes or the new bytes, never a mix.
* `put(..., if_absent=True)` is a compare-and-set on existence: of several
  writers racing for one path exactly one wins, the others get PreconditionFailed.
* Errors that may go away on retry are raised as TransientStoreError.

A backend is a class taking the URI, registered under its scheme (entry points
`respawn.stores`). It may take a keyword `durable: bool = True`: `open_store(uri,
durable=False)` asks for scratch writes that a host crash may lose (a local folder skips
fsync), for data that is made again when lost; a backend without the keyword is always
durable. A backend that leaves something behind after deletes (a local folder keeps empty
folders, and the temporary files of writes killed mid-way) also implements `Tidy`. One
that can read an object straight into a caller's buffer (no bytes object, no copy) also
implements `ReadsInto`; the codec uses it to load arrays on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..contracts import ExitCode, Reason
from ..errors import RespawnError


class StoreError(RespawnError):
    """Base class of all store errors."""


class NotFound(StoreError):
    """The path does not exist."""


class PreconditionFailed(StoreError):
    """A create-only write found the path already there (GCS answers 412)."""


class TransientStoreError(StoreError):
    """Storage is unreachable or throttling; the operation may succeed later (exit 75)."""

    exit_code = ExitCode.TRANSIENT_INFRA
    reason = Reason.TRANSIENT_INFRA


class StoreMisconfigured(StoreError):
    """The store cannot work as configured (no such bucket, no permission, a file where a
    folder must be): retrying will not help, fix the checkpoint URI or the identity (exit 64)."""

    exit_code = ExitCode.INVALID_INPUT
    reason = Reason.INVALID_INPUT


class OutsideStore(StoreError):
    """A path would lead out of the store (a symlinked folder in a file:// store)."""


@runtime_checkable
class Store(Protocol):
    """Minimal blob store: the runtime core only ever talks to this."""

    uri: str

    def put(self, path: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """Write `data` at `path` atomically; with `if_absent`, only if nothing is there."""

    def get(self, path: str) -> bytes:
        """Read the whole object; NotFound if missing."""

    def exists(self, path: str) -> bool:
        """True when an object is at `path`."""

    def list(self, prefix: str) -> list[str]:
        """Relative paths of all objects under `prefix`, sorted."""

    def delete(self, path: str) -> None:
        """Remove the object; a missing one is not an error."""


def local_puts(store: object) -> bool:
    """Whether a store's puts are local syscalls (file://, memory://: a `local_puts = True`
    attribute) rather than requests whose latency is worth overlapping (gs://)."""
    return getattr(store, "local_puts", False) is True


def check_path(path: str, *, prefix: bool = False) -> str:
    """Refuse absolute paths and traversal: a store never leaves its root.

    With `prefix`, a trailing '/' (a folder-like prefix) is allowed.
    """
    body = path[:-1] if prefix and path.endswith("/") else path
    if not body or body.startswith("/") or "\\" in body:
        raise ValueError(f"invalid store path {path!r}")
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise ValueError(f"invalid store path {path!r}")
    return path


@runtime_checkable
class ReadsInto(Protocol):
    """A store that can read an object into a buffer the caller allocated."""

    def get_into(self, path: str, allocate: Callable[[int], memoryview]) -> int:
        """Read the object at `path` into `allocate(its size)`, a writable buffer of that many
        bytes; returns how many bytes it read (fewer: the object shrank meanwhile). The caller
        may refuse a size it did not expect by raising in `allocate`. NotFound if missing."""


@runtime_checkable
class Tidy(Protocol):
    """A store that can remove what deletes and killed writes leave under a prefix."""

    def tidy(self, prefix: str, *, recursive: bool = True) -> None:
        """Remove temporary files of interrupted writes under `prefix` (below it too, if
        `recursive`) and folders left empty; only for a caller that owns `prefix` and
        whose other writers are fenced."""

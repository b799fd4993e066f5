"""Checkpoint stores, looked up by URI scheme through the `respawn.stores` entry points.

The runtime core imports only `base`; a backend module is imported when a URI of
its scheme is opened, so `file://` users never load google-cloud-storage.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import urlparse

from ..extras import missing_package_message
from .base import NotFound, PreconditionFailed, Store, StoreError, StoreMisconfigured, TransientStoreError

__all__ = [
    "NotFound",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "TransientStoreError",
    "open_store",
    "schemes",
    "set_durable_default",
]

_defaults = {"durable": True}
"""This process's choices for what `open_store` is not told."""


def set_durable_default(durable: bool) -> None:
    """What `open_store` opens when not told `durable`: for this process only.

    The chaos child sets False before it runs a pipeline. Its processes are killed,
    never its machine, so what one wrote is in the page cache for every later attempt;
    fsync and O_DIRECT guard only against a host crash, which no case simulates. Left
    durable, a 960-frame dataprep case wrote its 478 MB of shards around the page cache
    and the judge read them back from disk (about 1 s a case at 450 MB/s), beside the
    next case's own writes.
    """
    _defaults["durable"] = durable


def schemes() -> dict[str, str]:
    """Registered schemes and the backend class each one loads."""
    return {ep.name: ep.value for ep in entry_points(group="respawn.stores")}


def open_store(uri: str, *, durable: bool | None = None) -> Store:
    """Open the store behind `uri` (`file:///path`, `gs://bucket/prefix`, `memory://name`).

    `durable=False`: scratch data, made again if a host crash loses it (base.py); a backend
    that has no such mode is opened as it is. Not given: durable, unless this process
    said otherwise (`set_durable_default`).

    A plain path (no scheme) is taken as a local folder. A backend whose package is not
    installed (`gs://` without google-cloud-storage) raises StoreMisconfigured naming the
    extra to install: retrying cannot help.
    """
    scheme = urlparse(uri).scheme or "file"
    if scheme == "file" and "://" not in uri:
        uri = "file://" + _abspath(uri)
    try:
        backend = _backend(scheme)
        if backend is None:
            known = ", ".join(f"{s}://" for s in sorted(schemes())) or "none"
            raise ValueError(f"unsupported storage URI {uri!r}: known schemes are {known}")
        takes_durable = "durable" in inspect.signature(backend).parameters
        durable = _defaults["durable"] if durable is None else durable
        store: Store = backend(uri, durable=durable) if takes_durable else backend(uri)  # type: ignore[call-arg]
    except ModuleNotFoundError as e:  # the backend imports its client library lazily
        message = missing_package_message(e, f"the {scheme}:// checkpoint store")
        if message is None:
            raise
        raise StoreMisconfigured(message) from None
    return store


@functools.cache
def _backend(scheme: str) -> Callable[[str], Store] | None:
    # Scanning the installed distributions' entry points takes ~2 ms: once per scheme.
    found = [ep for ep in entry_points(group="respawn.stores") if ep.name == scheme]
    return found[0].load() if found else None


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(path)

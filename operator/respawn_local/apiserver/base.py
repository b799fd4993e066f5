"""`ServerBase`: the state every part of `ApiServer` shares, and its primitives.

Each mixin subclasses `ServerBase`, so the type checker knows the server's state
(set in `ApiServer.__init__`) and the methods one part calls on another. The
methods that work on that state itself (the resourceVersion counter, the event
log that feeds watches, reading one object) live here; the rest are declared
under `TYPE_CHECKING` only, with the mixin that implements them named, so at run
time every method still comes from its mixin.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from respawn_local.apiauth import TlsFiles, TokenAuthority
from respawn_local.apiserver.common import ApiError, Obj
from respawn_local.apiserver.resources import ResourceType

if TYPE_CHECKING:
    from respawn_local.apiserver.faults import Faults


@dataclasses.dataclass
class WatchEvent:
    """One change in the store, kept in the bounded history for watch replay."""

    rv: int
    type: str
    rkey: tuple[str, str]
    obj: Obj
    old: Obj | None = None


@dataclasses.dataclass(eq=False)
class Watcher:
    rkey: tuple[str, str]
    namespace: str | None
    queue: asyncio.Queue[WatchEvent | None]


class ServerBase:
    """What the mixins of `ApiServer` share (the state is set up in `ApiServer.__init__`)."""

    host: str
    port: int
    authenticate: bool
    tokens: TokenAuthority
    admin_token: str
    denials: list[tuple[str, str, int]]
    tls: TlsFiles | None
    bookmark_interval: float
    history_size: int
    strict_namespaces: bool
    gc_interval: float
    types: dict[tuple[str, str], ResourceType]
    store: dict[tuple[str, str], dict[tuple[str, str], Obj]]
    uids: dict[str, tuple[tuple[str, str], str, str]]
    rv: int
    history: collections.deque[WatchEvent]
    compacted_rv: int
    _watchers: set[Watcher]
    faults: Faults
    requests: collections.Counter[tuple[str, str]]
    requests_by_agent: collections.Counter[tuple[str, str, str]]
    expired_watches: int
    request_log: collections.deque[tuple[str, str, str, int]]
    _gc_wake: asyncio.Event | None
    _stopping: bool

    # -- resourceVersions, the event log, reads ----------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, etype: str, rtype: ResourceType, obj: Obj, old: Obj | None = None) -> None:
        ev = WatchEvent(int(obj["metadata"]["resourceVersion"]), etype, rtype.key, copy.deepcopy(obj), old)
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        ns = obj["metadata"].get("namespace")
        for w in self._watchers:
            if w.rkey == rtype.key and (w.namespace is None or w.namespace == ns):
                w.queue.put_nowait(ev)
        if etype in ("DELETED", "MODIFIED") and self._gc_wake is not None:
            self._gc_wake.set()

    def _not_found(self, rtype: ResourceType, name: str) -> ApiError:
        details: Obj = {"name": name, "kind": rtype.plural}
        if rtype.group:
            details["group"] = rtype.group
        return ApiError(404, "NotFound", f'{rtype.qualified} "{name}" not found', details)

    def _get(self, rtype: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.store[rtype.key].get((ns or "", name))
        if obj is None:
            raise self._not_found(rtype, name)
        return obj

    if TYPE_CHECKING:
        # -- implemented by StoreMixin (store.py) --------------------------

        def _create(self, rtype: ResourceType, ns: str | None, body: Obj, version: str | None = None) -> Obj: ...

        def _update(
            self,
            rtype: ResourceType,
            ns: str | None,
            name: str,
            new: Obj,
            subresource: str | None,
            version: str | None = None,
            expected_rv: str | None = None,
        ) -> Obj: ...

        def _patch(
            self,
            rtype: ResourceType,
            ns: str | None,
            name: str,
            patch_type: str,
            patch: Any,
            subresource: str | None,
            version: str | None = None,
        ) -> Obj: ...

        def _remove(self, rtype: ResourceType, obj: Obj) -> Obj: ...

        def _delete(self, rtype: ResourceType, ns: str | None, name: str, options: Obj) -> Obj: ...

        def _list(
            self,
            rtype: ResourceType,
            ns: str | None,
            label_selector: str | None = None,
            field_selector: str | None = None,
        ) -> list[Obj]: ...

        # -- AdmissionMixin (admission.py) ---------------------------------

        def _validate(
            self, rtype: ResourceType, obj: Obj, version: str | None, field_validation: str | None = None
        ) -> Obj: ...

        def _apply_defaults(self, rtype: ResourceType, obj: Obj) -> None: ...

        def _finish_job_create(self, obj: Obj) -> None: ...

        def _check_immutable(self, rtype: ResourceType, old: Obj, new: Obj) -> None: ...

        # -- CrdMixin (crds.py) --------------------------------------------

        def _crd_problems(self, crd: Obj) -> list[Obj]: ...

        def _serve_crd(self, crd: Obj) -> None: ...

        def _unserve_crd(self, crd: Obj) -> None: ...

        # -- TablesMixin (tables.py) ---------------------------------------

        @staticmethod
        def _render(rtype: ResourceType, obj: Obj, version: str | None) -> Obj: ...

        def _table(self, rtype: ResourceType, version: str, items: list[Obj], include: str, rv: str) -> Obj: ...

        # -- WatchMixin (watch.py) -----------------------------------------

        async def _watch(
            self, request: web.Request, rtype: ResourceType, ns: str | None, name: str | None, version: str
        ) -> web.StreamResponse: ...

        # -- SubresourcesMixin (subresources.py) ---------------------------

        def token_request(self, ns: str, name: str, body: Obj) -> Obj: ...

        async def _log(
            self, rtype: ResourceType, ns: str | None, name: str, request: web.Request
        ) -> web.StreamResponse: ...

        def evict(self, ns: str, name: str, delete_options: Obj | None = None) -> Obj: ...

        def bind(self, ns: str, name: str, node: str) -> Obj: ...

        # -- DiscoveryMixin (discovery.py), OpenApiMixin (openapi.py) ------

        def _discovery(self, path: str) -> web.Response | None: ...

        def _openapi_v3(self, rest: list[str]) -> web.Response: ...

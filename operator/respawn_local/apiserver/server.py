"""`ApiServer`: its state, starting and stopping, type lookup; the rest comes from the mixins."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from aiohttp import web

from respawn_local.apiauth import TlsFiles, TokenAuthority
from respawn_local.apiserver.admission import AdmissionMixin
from respawn_local.apiserver.collector import GarbageCollectorMixin
from respawn_local.apiserver.common import ApiError
from respawn_local.apiserver.crds import CrdMixin
from respawn_local.apiserver.discovery import DiscoveryMixin
from respawn_local.apiserver.faults import Faults
from respawn_local.apiserver.http import HttpMixin
from respawn_local.apiserver.openapi import OpenApiMixin
from respawn_local.apiserver.resources import ResourceType, _builtin_types
from respawn_local.apiserver.store import StoreMixin
from respawn_local.apiserver.subresources import SubresourcesMixin
from respawn_local.apiserver.tables import TablesMixin
from respawn_local.apiserver.watch import WatchMixin


class ApiServer(
    HttpMixin,
    DiscoveryMixin,
    OpenApiMixin,
    SubresourcesMixin,
    WatchMixin,
    TablesMixin,
    CrdMixin,
    GarbageCollectorMixin,
    AdmissionMixin,
    StoreMixin,
):
    """The Kubernetes API emulator. Create, `await start()`, use `url`, `await stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 5000,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
        strict_namespaces: bool = True,
        gc_interval: float = 0.2,
        bookmark_interval: float = 5.0,
        authenticate: bool = True,
        allow_anonymous: bool = False,
        tls: bool = True,
    ) -> None:
        self.host = host
        self.authenticate = authenticate
        """Refuse requests without a valid token (401) and judge the rest by RBAC (403)."""
        self.tokens = TokenAuthority(allow_anonymous=allow_anonymous)
        self.admin_token = self.tokens.admin_token
        """A bearer token of a `system:masters` user (kubeconfigs, the pod simulator)."""
        self.denials = []
        """Requests refused by authentication (401) or RBAC (403), as (user, what, code)."""
        self.tls = TlsFiles.create() if tls else None
        """Serve HTTPS with a fresh CA (`tls.ca_file` is what clients trust)."""
        self.bookmark_interval = bookmark_interval
        self.port = port
        self.history_size = history_size
        self.strict_namespaces = strict_namespaces
        self.gc_interval = gc_interval
        self.types = {t.key: t for t in _builtin_types()}
        self.store = collections.defaultdict(dict)
        self.uids = {}
        self.rv = 0
        self.history = collections.deque()
        self.compacted_rv = 0
        self._watchers = set()
        self.faults = Faults(self)
        self.requests = collections.Counter()
        """Requests by (verb, resource), e.g. ("patch", "pipelineruns/status")."""
        self.requests_by_agent = collections.Counter()
        """Requests by (user agent product, verb, resource)."""
        self.expired_watches = 0
        """Watches answered with 410 Gone (their resourceVersion was compacted away)."""
        self.request_log = collections.deque(maxlen=10000)
        """Recent requests as (method, path?query, user agent, status)."""
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._gc_wake = None
        self._stopping = False
        for ns in namespaces:
            self._create(self.types[("", "namespaces")], None, {"metadata": {"name": ns}})

    # -- lifecycle --------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. https://127.0.0.1:40123 (http without `tls`)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> str:
        """Bind (a free port unless one was given) and serve; return the URL."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._start_site()
        self._gc_wake = asyncio.Event()
        self._gc_task = asyncio.create_task(self._gc_loop())
        return self.url

    async def _start_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            reuse_address=True,
            ssl_context=self.tls.server_context() if self.tls else None,
        )
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            # aiohttp types `_server` as an AbstractServer; a TCPSite's is a loop.create_server Server.
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def _drop_connections(self) -> None:
        """Close every open client connection (keep-alive ones too), like a crashed server."""
        server = self._runner.server if self._runner is not None else None
        for handler in list(getattr(server, "connections", []) or []):
            handler.force_close()
            if handler.transport is not None:
                handler.transport.close()

    async def stop(self) -> None:
        """Close watches, stop serving, stop the garbage collector."""
        self._stopping = True  # 3.11's wait_for may swallow the cancellation below
        if self._gc_wake is not None:
            self._gc_wake.set()
        self.faults.close_watches()
        if self._gc_task:
            self._gc_task.cancel()
            try:
                await self._gc_task
            except asyncio.CancelledError:
                pass
        if self._runner:
            await self._runner.cleanup()

    # -- type lookup -----------------------------------------------------

    def resolve(self, name: str) -> ResourceType:
        """Find a type by plural, singular, kind, short name, or `plural.group`."""
        low = name.lower()
        for t in self.types.values():
            if low in (t.qualified, f"{t.singular}.{t.group}", f"{t.kind.lower()}.{t.group}"):
                return t
        candidates = [t for t in self.types.values() if low in (t.plural, t.singular, t.kind.lower(), *t.short_names)]
        # Prefer core over events.k8s.io for "events", like kubectl.
        candidates.sort(key=lambda t: (t.group != "", t.group))
        if not candidates:
            raise ApiError(404, "NotFound", f"the server doesn't have a resource type {name!r}")
        return candidates[0]

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        for t in self.types.values():
            if t.group == group and t.kind == kind:
                return t
        raise ApiError(404, "NotFound", f"no matches for kind {kind!r} in version {api_version!r}")

"""A fault-injecting HTTP proxy (aiohttp, 127.0.0.1) in front of fake-gcs-server.

Point STORAGE_EMULATOR_HOST of a runtime process at `proxy.url`, then:

* `fail_next(n, status)`: answer `status` (429, 503 ...) to the next n matching requests;
* `latency(seconds)`: delay every request;
* `drop_next(n, after=False)`: close the connection mid-request: before forwarding
  (mid-upload: part of the body read, nothing stored), or with `after=True` once the
  upstream has answered (the write landed, the client never hears of it);
* `down("503" | "refuse" | "hang")`: storage stays down: every request answered 503,
  connections refused (listener closed), or accepted and never answered;
  `up()` brings it back.

`match` narrows a fault to some requests, e.g. `COMMITS` (create-only uploads of
commit objects) or `ARTIFACTS`. Counters tell how many faults were injected.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import ClientSession, ClientTimeout, web
from respawn_local.testkit import free_port, wait_for

from tests.conftest import gcs_answers

Match = Callable[[str, str, bytes], bool]
"""(method, unquoted path with query, first bytes of the body) -> does the fault apply.
A multipart upload names its object in the body's JSON part, not in the URL."""


def ANY(method: str, path: str, head: bytes) -> bool:
    return True


def COMMITS(method: str, path: str, head: bytes) -> bool:
    return method == "POST" and "/upload/" in path and "ifGenerationMatch=0" in path and b"/commits/" in head


def ARTIFACTS(method: str, path: str, head: bytes) -> bool:
    return method == "POST" and "/upload/" in path and b"/artifacts/" in head


@dataclass
class _Fault:
    kind: str  # "status" | "drop-before" | "drop-after"
    left: int
    match: Match
    status: int = 503
    skip: int = 0
    """Matching requests to let through before the fault starts."""


@dataclass
class FaultProxy:
    upstream: str
    port: int = field(default_factory=free_port)
    requests: int = 0
    injected: int = 0
    _faults: list[_Fault] = field(default_factory=list)
    _latency: float = 0.0
    _down: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control (any thread) --------------------------------------------------
    def fail_next(self, n: int, status: int = 503, match: Match = ANY, skip: int = 0) -> None:
        with self._lock:
            self._faults.append(_Fault("status", n, match, status, skip))

    def drop_next(self, n: int, *, after: bool = False, match: Match = ANY, skip: int = 0) -> None:
        with self._lock:
            self._faults.append(_Fault("drop-after" if after else "drop-before", n, match, skip=skip))

    def latency(self, seconds: float) -> None:
        self._latency = seconds

    def down(self, how: str = "503") -> None:
        if how == "hang":
            self._loop.call_soon_threadsafe(self._release.clear)
        self._down = how
        if how == "refuse":
            self._call(self._site_stop())

    def up(self) -> None:
        if self._down == "refuse":
            self._call(self._site_start())
        self._down = ""
        self._loop.call_soon_threadsafe(self._release.set)

    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.left for f in self._faults)

    # -- life cycle ------------------------------------------------------------
    def start(self) -> FaultProxy:
        import logging

        # Dropped connections are the point; aiohttp would log each one as an error.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._setup())
        return self

    def stop(self) -> None:
        self._call(self._teardown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _setup(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
        self._release = asyncio.Event()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._site_start()

    async def _site_start(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _site_stop(self) -> None:
        await self._site.stop()

    async def _teardown(self) -> None:
        self._release.set()
        await self._runner.cleanup()
        await self._session.close()

    # -- the proxy ---------------------------------------------------------------
    def _take(self, method: str, path: str, head: bytes) -> _Fault | None:
        with self._lock:
            self.requests += 1
            for f in self._faults:
                if f.left > 0 and f.match(method, path, head):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    f.left -= 1
                    self.injected += 1
                    return f
            return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.path_qs)
        if self._down == "hang":
            self.injected += 1
            await self._release.wait()
        elif self._down:
            self.injected += 1
            return web.Response(status=503, text="storage down (fault proxy)")
        if self._latency:
            await asyncio.sleep(self._latency)
        body = await request.read()
        fault = self._take(request.method, path, body[:4096])
        if fault is not None and fault.kind == "status":
            return web.Response(status=fault.status, text=f"injected {fault.status}")
        if fault is not None and fault.kind == "drop-before":
            # The upload went out but the line died before storage kept it.
            return self._abort(request)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as up:
            data = await up.read()
            if fault is not None and fault.kind == "drop-after":
                return self._abort(request)  # the write landed; its answer is lost
            out_headers = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=up.status, body=data, headers=out_headers)

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("fault proxy dropped the connection")


def started(upstream: str) -> FaultProxy:
    proxy = FaultProxy(upstream).start()
    wait_for(lambda: gcs_answers(proxy.url, timeout=2), 20, "the fault proxy to answer")
    return proxy

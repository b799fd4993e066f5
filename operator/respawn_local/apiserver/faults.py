"""Fault injection for tests: failing requests, cut watches, a paused server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from respawn_local.apiserver.server import ApiServer


@dataclasses.dataclass
class FaultRule:
    """Answer `status` to the next `count` requests for which `match(request)` is true."""

    match: Callable[[web.Request], bool]
    """Predicate over the aiohttp request."""
    status: int
    """HTTP status to answer (e.g. 500, 429)."""
    count: int
    """How many more requests to fail."""
    retry_after: int | None = None
    """Retry-After seconds for 429 answers."""


class Faults:
    """Fault injection for tests: failing requests, cut watches, a paused server.

    Methods must be called on the server's loop; `ApiServerThread.faults` wraps them
    for other threads.
    """

    def __init__(self, server: ApiServer) -> None:
        self._server = server
        self.rules: list[FaultRule] = []
        self.paused_until = 0.0
        self.injected = 0

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        match: Callable[[web.Request], bool] | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """Make the next `count` requests matching `match` (default: all) answer `status`."""
        rule = FaultRule(match or (lambda r: True), status, count, retry_after)
        self.rules.append(rule)
        return rule

    def close_watches(self) -> int:
        """End every open watch stream now (clients see EOF and must re-watch)."""
        n = 0
        for w in list(self._server._watchers):
            w.queue.put_nowait(None)
            n += 1
        return n

    async def pause(self, seconds: float, refuse: bool = False) -> None:
        """Stop answering for `seconds`.

        refuse=False: requests hang until the pause ends (a stuck server).
        refuse=True: the listening socket is closed, new connections are refused, and
        open watches are cut; the server comes back on the same port afterwards.
        """
        loop = asyncio.get_running_loop()
        self.paused_until = loop.time() + seconds
        if refuse:
            self.close_watches()
            await self._server._stop_site()
            self._server._drop_connections()
            loop.call_later(seconds, lambda: asyncio.ensure_future(self._server._start_site()))

    def _take(self, request: web.Request) -> FaultRule | None:
        for rule in self.rules:
            if rule.count > 0 and rule.match(request):
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
                self.injected += 1
                return rule
        return None

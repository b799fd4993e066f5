"""Watch streams over the store's bounded event history (410 Gone, bookmarks, tables); the events: `base`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from respawn_local.apiserver.base import ServerBase, Watcher
from respawn_local.apiserver.common import ApiError, Obj
from respawn_local.apiserver.resources import ResourceType
from respawn_local.apiserver.selectors import parse_field_selector, parse_label_selector
from respawn_local.apiserver.tables import _wants_table


class WatchMixin(ServerBase):
    """`ApiServer`'s watch streams."""

    async def _watch(
        self, request: web.Request, rtype: ResourceType, ns: str | None, name: str | None, version: str
    ) -> web.StreamResponse:
        q = request.query
        field_selector = q.get("fieldSelector")
        if name:  # legacy /watch/namespaces/ns/pods/name
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(field_selector, rtype.field_selectors)
        namespace = ns if rtype.namespaced else None

        def matches(o: Obj | None) -> bool:
            return o is not None and lsel(o["metadata"].get("labels") or {}) and fsel(o)

        rv_param = q.get("resourceVersion", "")
        watcher = Watcher(rtype.key, namespace, asyncio.Queue())
        backlog = self._watch_start(rtype, namespace, rv_param, matches, watcher)
        expired = bool(backlog) and backlog[0][0] == "ERROR"
        if not expired:
            self._watchers.add(watcher)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        as_table = _wants_table(request)
        headers_sent = False

        def render(o: Obj) -> Obj:
            # `kubectl get -w` watches in Table form: one row per event, columns once.
            nonlocal headers_sent
            if not as_table:
                return self._render(rtype, o, version)
            table = self._table(
                rtype, version, [o], q.get("includeObject", "Metadata"), o["metadata"]["resourceVersion"]
            )
            if headers_sent:
                table["columnDefinitions"] = []
            headers_sent = True
            return table

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        timeout = q.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        try:
            await resp.prepare(request)
            for etype, o in backlog:
                obj = o if etype == "ERROR" else render(o)
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            if expired:
                return resp
            last_bookmark = loop.time()
            while True:
                wait = (
                    min(1.0, self.bookmark_interval)
                    if deadline is None
                    else min(1.0, self.bookmark_interval, deadline - loop.time())
                )
                if wait <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    if bookmarks and loop.time() - last_bookmark >= self.bookmark_interval:
                        last_bookmark = loop.time()
                        await resp.write(
                            json.dumps(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": rtype.kind,
                                        "apiVersion": rtype.api_version(version),
                                        "metadata": {"resourceVersion": str(self.rv)},
                                    },
                                }
                            ).encode()
                            + b"\n"
                        )
                    continue
                if ev is None:
                    break
                now_match, was_match = matches(ev.obj), matches(ev.old)
                etype = ev.type
                if etype == "MODIFIED" and ev.old is not None and was_match and not now_match:
                    etype = "DELETED"
                elif etype == "MODIFIED" and ev.old is not None and now_match and not was_match:
                    etype = "ADDED"
                elif not now_match:
                    continue
                await resp.write(json.dumps({"type": etype, "object": render(ev.obj)}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    def _watch_start(
        self,
        rtype: ResourceType,
        namespace: str | None,
        rv_param: str,
        matches: Callable[[Obj | None], bool],
        watcher: Watcher,
    ) -> list[tuple[str, Obj]]:
        """Where a watch starts: the current objects (rv "" or "0"), the history since rv
        (queued on `watcher`), or a 410 Expired when that history is compacted away."""
        backlog: list[tuple[str, Obj]] = []
        if rv_param in ("", "0"):
            for o in self._list(rtype, namespace):
                if matches(o):
                    backlog.append(("ADDED", o))
        else:
            try:
                since = int(rv_param)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {rv_param!r}") from None
            if since < self.compacted_rv:
                self.expired_watches += 1
                backlog.append(
                    (
                        "ERROR",
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({self.compacted_rv + 1})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    )
                )
            else:
                for ev in self.history:
                    if (
                        ev.rv > since
                        and ev.rkey == rtype.key
                        and (namespace is None or ev.obj["metadata"].get("namespace") == namespace)
                    ):
                        watcher.queue.put_nowait(ev)
        return backlog

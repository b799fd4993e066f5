"""HTTP: the middleware (counting, faults, authentication, RBAC), URL parsing, the handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from respawn_local.apiauth import RBAC_GROUP, RequestAttributes, authorize
from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj, _field_validation
from respawn_local.apiserver.protobuf import decode_protobuf
from respawn_local.apiserver.resources import ResourceType
from respawn_local.apiserver.tables import _wants_table

_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


class HttpMixin(ServerBase):
    """`ApiServer`'s HTTP side."""

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        while loop.time() < self.faults.paused_until:
            await asyncio.sleep(min(0.05, self.faults.paused_until - loop.time()))
        verb, resource = self._classify(request)
        agent = request.headers.get("User-Agent", "").split("/")[0].split(" ")[0]
        self.requests[(verb, resource)] += 1
        self.requests_by_agent[(agent, verb, resource)] += 1
        refusal = self._authenticate_and_authorize(request)
        rule = self.faults._take(request) if refusal is None else None
        if refusal is not None:
            resp: web.StreamResponse = web.json_response(refusal.status(), status=refusal.code)
        elif rule is not None:
            reason = "TooManyRequests" if rule.status == 429 else "InternalError"
            err = ApiError(rule.status, reason, f"injected fault: {rule.status}")
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            resp = web.json_response(err.status(), status=rule.status, headers=headers)
        else:
            try:
                resp = await handler(request)
            except ApiError as e:
                resp = web.json_response(e.status(), status=e.code)
        self.request_log.append((request.method, request.path_qs, agent, resp.status))
        return resp

    def _authenticate_and_authorize(self, request: web.Request) -> ApiError | None:
        """None if the request may go on; else the 401/403 the real server answers (and a denial noted)."""
        if not self.authenticate:
            return None

        def alive(uid: str) -> bool:
            key = self.uids.get(uid)
            return key is not None and key[1:] in self.store[key[0]]

        user = self.tokens.authenticate(request.headers.get("Authorization"), alive)
        if user is None:
            self.denials.append(("", f"{request.method} {request.path}", 401))
            return ApiError(401, "Unauthorized", "Unauthorized")
        attrs = self._attributes(request)
        if authorize(user, attrs, self._rbac_objects):
            return None
        what = attrs.describe()
        self.denials.append((user.username, what, 403))
        if not attrs.resource:
            return ApiError(403, "Forbidden", f'forbidden: User "{user.username}" {what}')
        qualified = attrs.resource if not attrs.group else f"{attrs.resource}.{attrs.group}"
        named = f' "{attrs.name}"' if attrs.name else ""
        details: Obj = {
            "kind": attrs.resource,
            **({"group": attrs.group} if attrs.group else {}),
            **({"name": attrs.name} if attrs.name else {}),
        }
        return ApiError(403, "Forbidden", f'{qualified}{named} is forbidden: User "{user.username}" {what}', details)

    def _attributes(self, request: web.Request) -> RequestAttributes:
        path = request.path.rstrip("/") or "/"
        verb, _ = self._classify(request)
        try:
            parsed = self._parse_path(path)
        except ApiError:
            parsed = None
        if parsed is None:
            return RequestAttributes(
                verb="get" if request.method in ("GET", "HEAD") else request.method.lower(), path=path
            )
        rtype, ns, name, sub, _ = parsed
        if rtype.key == ("", "namespaces") and name:
            ns = name  # a namespace's own object is judged inside that namespace, as on a real server
        return RequestAttributes(
            verb=verb,
            namespace=ns,
            group=rtype.group,
            resource=rtype.plural,
            subresource=sub or "",
            name=name or "",
            path=path,
        )

    def _rbac_objects(self, plural: str, namespace: str | None) -> list[Obj]:
        return [o for (ns, _), o in self.store[(RBAC_GROUP, plural)].items() if namespace is None or ns == namespace]

    def _classify(self, request: web.Request) -> tuple[str, str]:
        try:
            parsed = self._parse_path(request.path)
        except ApiError:
            return (request.method.lower(), request.path)
        if parsed is None:
            return ("get", "discovery")
        rtype, _, name, sub, _ = parsed
        resource = rtype.plural + (f"/{sub}" if sub else "")
        method = request.method
        watch = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
        if method == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        else:
            verb = {
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection",
            }.get(method, method.lower())
        return (verb, resource)

    def _parse_path(self, path: str) -> tuple[ResourceType, str | None, str | None, str | None, str] | None:
        """Split a resource URL into (type, namespace, name, subresource, version); None for discovery."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        if rest[0] == "watch":
            rest = rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = self.types.get((group, rest[2]))
            if cand is not None and cand.namespaced and version in cand.versions:
                ns, rest = rest[1], rest[2:]
        rtype = self.types.get((group, rest[0]))
        if rtype is None or version not in rtype.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not ((sub == "status" and rtype.status_subresource) or sub in rtype.extra_subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype, ns, name, sub, version

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        discovered = self._discovery(path)
        if discovered is not None:
            return discovered
        parsed = self._parse_path(path)
        if parsed is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype, ns, name, sub, version = parsed
        q = request.query
        method = request.method
        _field_validation.set(q.get("fieldValidation"))
        if q.get("dryRun") and method != "GET":
            # Refuse rather than silently applying a change the client believes is a dry run.
            raise ApiError(400, "BadRequest", "dryRun is not supported by the respawn API emulator")
        watch = q.get("watch") in ("true", "1") or "/watch/" in path
        if method == "GET" and watch:
            return await self._watch(request, rtype, ns, name, version)
        if name is None:
            return await self._collection(request, rtype, ns, version)
        if rtype.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub in ("log", "eviction", "token", "binding"):
            return await self._subresource(request, rtype, ns, name, sub)
        return await self._object(request, rtype, ns, name, sub, version)

    async def _collection(
        self, request: web.Request, rtype: ResourceType, ns: str | None, version: str
    ) -> web.StreamResponse:
        """A request without a name: list, create, delete a collection."""
        q = request.query
        method = request.method
        if method == "GET":
            items = self._list(rtype, ns, q.get("labelSelector"), q.get("fieldSelector"))
            rv = str(self.rv)
            if _wants_table(request):
                return web.json_response(self._table(rtype, version, items, q.get("includeObject", "Metadata"), rv))
            return web.json_response(
                {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version(version),
                    "metadata": {"resourceVersion": rv},
                    "items": [self._render(rtype, o, version) for o in items],
                }
            )
        if method == "POST":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            obj = self._create(rtype, ns, body, version)
            return web.json_response(self._render(rtype, obj, version), status=201)
        if method == "DELETE":
            options = await _delete_options(request)
            items = self._list(rtype, ns, q.get("labelSelector"), q.get("fieldSelector"))
            for o in items:
                try:
                    self._delete(rtype, o["metadata"].get("namespace"), o["metadata"]["name"], options)
                except ApiError:
                    pass
            return web.json_response(
                {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version(version),
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _subresource(
        self, request: web.Request, rtype: ResourceType, ns: str | None, name: str, sub: str
    ) -> web.StreamResponse:
        """log, eviction, token and binding (status goes with the object in `_object`)."""
        method = request.method
        if sub == "log":
            return await self._log(rtype, ns, name, request)
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        body = await _json_body(request)
        if sub == "eviction":
            self.evict(ns or "", name, (body or {}).get("deleteOptions") or {})
        elif sub == "token":
            return web.json_response(
                self.token_request(ns or "", name, body if isinstance(body, dict) else {}), status=201
            )
        else:  # binding
            self.bind(ns or "", name, ((body or {}).get("target") or {}).get("name", ""))
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201
        )

    async def _object(
        self, request: web.Request, rtype: ResourceType, ns: str | None, name: str, sub: str | None, version: str
    ) -> web.StreamResponse:
        """GET, PUT, PATCH, DELETE of one object (or of its status)."""
        q = request.query
        method = request.method
        if method == "GET":
            obj = self._get(rtype, ns, name)
            if _wants_table(request):
                return web.json_response(
                    self._table(
                        rtype, version, [obj], q.get("includeObject", "Metadata"), obj["metadata"]["resourceVersion"]
                    )
                )
            return web.json_response(self._render(rtype, obj, version))
        if method == "PUT":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            obj = self._update(rtype, ns, name, body, sub, version)
            return web.json_response(self._render(rtype, obj, version))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype not in _PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {', '.join(_PATCH_TYPES)}",
                )
            body = await _json_body(request)
            obj = self._patch(rtype, ns, name, _PATCH_TYPES[ctype], body, sub, version)
            return web.json_response(self._render(rtype, obj, version))
        if method == "DELETE":
            if sub:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            options = await _delete_options(request)
            obj = self._delete(rtype, ns, name, options)
            return web.json_response(self._render(rtype, obj, version))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


async def _json_body(request: web.Request) -> Any:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype.startswith("application/vnd.kubernetes.protobuf"):
        return decode_protobuf(await request.read())
    if ctype == "application/cbor":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        )
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            import yaml

            return yaml.safe_load(raw)
        except Exception:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None


async def _delete_options(request: web.Request) -> Obj:
    body = await _json_body(request) or {}
    options: Obj = dict(body) if isinstance(body, dict) else {}
    q = request.query
    if "gracePeriodSeconds" in q:
        options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
    if "propagationPolicy" in q:
        options["propagationPolicy"] = q["propagationPolicy"]
    if "orphanDependents" in q:
        options["orphanDependents"] = q["orphanDependents"] == "true"
    return options

"""Subresources with their own semantics: serviceaccounts/token, pods/log, pods/eviction, pods/binding."""

from __future__ import annotations

import asyncio
import copy

from aiohttp import web

from respawn_local.apiauth import EXTRA_POD_NAME, EXTRA_POD_UID, service_account_user
from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj, now_rfc3339
from respawn_local.apiserver.resources import ResourceType


class SubresourcesMixin(ServerBase):
    """`ApiServer`'s subresources."""

    def token_request(self, ns: str, name: str, body: Obj) -> Obj:
        """The TokenRequest API: a token for ServiceAccount `ns/name`, optionally bound to a pod."""
        self._get(self.types[("", "serviceaccounts")], ns, name)  # 404 if the account does not exist
        spec = dict((body or {}).get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise ApiError(
                422, "Invalid", "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes"
            )
        extra: dict[str, tuple[str, ...]] = {}
        bound_uid = None
        ref = spec.get("boundObjectRef")
        if ref:
            if ref.get("kind") != "Pod":
                raise ApiError(
                    400, "BadRequest", f"cannot bind token to object of kind {ref.get('kind')!r} (emulated: Pod)"
                )
            pod = self._get(self.types[("", "pods")], ns, ref.get("name", ""))
            if ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"the UID in the bound object reference ({ref['uid']}) does not match "
                    f"the UID in record. The object might have been deleted and then recreated",
                )
            bound_uid = pod["metadata"]["uid"]
            extra = {EXTRA_POD_NAME: (pod["metadata"]["name"],), EXTRA_POD_UID: (bound_uid,)}
        token = self.tokens.issue(service_account_user(ns, name, extra), seconds, bound_uid)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": now_rfc3339(seconds)},
        }

    async def _log(self, rtype: ResourceType, ns: str | None, name: str, request: web.Request) -> web.StreamResponse:
        """pods/log from the simulator's log file; `follow=true` streams until the pod ends."""
        pod = self._get(rtype, ns, name)
        uid = pod["metadata"]["uid"]
        path = (pod["metadata"].get("annotations") or {}).get("respawn.dev/sim-log")
        data = b""
        if path:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
        tail = request.query.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(data)
        offset = len(data) if not tail else None
        if offset is None and path:
            try:
                with open(path, "rb") as f:
                    offset = len(f.read())
            except OSError:
                offset = 0
        while not self._stopping:
            current = self.store[rtype.key].get((ns or "", name))
            done = (
                current is None
                or current["metadata"]["uid"] != uid
                or (current.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            )
            path = path or ((current or {}).get("metadata", {}).get("annotations") or {}).get("respawn.dev/sim-log")
            if path:
                try:
                    with open(path, "rb") as f:
                        f.seek(offset or 0)
                        chunk = f.read()
                except OSError:
                    chunk = b""
                if chunk:
                    offset = (offset or 0) + len(chunk)
                    try:
                        await resp.write(chunk)
                    except (ConnectionResetError, RuntimeError):
                        break
            if done:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.1)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    def evict(self, ns: str, name: str, delete_options: Obj | None = None) -> Obj:
        """The pods/eviction subresource: mark DisruptionTarget, then delete gracefully."""
        pods = self.types[("", "pods")]
        pod = self._get(pods, ns, name)
        if not pod["metadata"].get("deletionTimestamp"):
            cond = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": now_rfc3339(),
            }
            conds = [
                c for c in pod.get("status", {}).get("conditions", []) or [] if c.get("type") != "DisruptionTarget"
            ]
            self._patch(pods, ns, name, "merge", {"status": {"conditions": [*conds, cond]}}, "status")
        return self._delete(pods, ns, name, delete_options or {})

    def bind(self, ns: str, name: str, node: str) -> Obj:
        """The pods/binding subresource: set spec.nodeName once."""
        pods = self.types[("", "pods")]
        pod = self._get(pods, ns, name)
        if pod.get("spec", {}).get("nodeName"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conds = [c for c in new.get("status", {}).get("conditions", []) or [] if c.get("type") != "PodScheduled"]
        new.setdefault("status", {})["conditions"] = [
            *conds,
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()},
        ]
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.store[pods.key][(ns, name)] = new
        self._emit("MODIFIED", pods, new, pod)
        return new

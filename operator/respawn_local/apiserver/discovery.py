"""Discovery: /version, /api, /apis, resource lists (and /openapi/v3, from openapi.py)."""

from __future__ import annotations

from aiohttp import web

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj


class DiscoveryMixin(ServerBase):
    """`ApiServer`'s discovery documents."""

    def _discovery(self, path: str) -> web.Response | None:
        """The answer to a discovery or health path; None for any other path."""
        if path == "/version":
            return web.json_response(
                {
                    "major": "1",
                    "minor": "32",
                    "gitVersion": "v1.32.0-respawn-emulator",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.23.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/api":
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if path == "/apis":
            groups = []
            for g, versions in sorted(self._groups().items()):
                vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
                groups.append({"name": g, "versions": vs, "preferredVersion": vs[0]})
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis":
            group_versions = self._groups().get(parts[1])
            if not group_versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            vs = [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in group_versions]
            return web.json_response(
                {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": vs, "preferredVersion": vs[0]}
            )
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            body = self._resource_list(group, version)
            if body is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(body)
        if parts and parts[0] == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            return self._openapi_v3(parts[2:])
        return None

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self.types.values():
            if t.group:
                for v in t.versions:
                    if v not in groups.setdefault(t.group, []):
                        groups[t.group].append(v)
        return groups

    def _resource_list(self, group: str, version: str) -> Obj | None:
        resources = []
        for t in sorted(self.types.values(), key=lambda t: t.plural):
            if t.group != group or version not in t.versions:
                continue
            entry: Obj = {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }
            if t.short_names:
                entry["shortNames"] = t.short_names
            if t.categories:
                entry["categories"] = t.categories
            resources.append(entry)
            if t.status_subresource:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if "eviction" in t.extra_subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/eviction",
                        "singularName": "",
                        "namespaced": True,
                        "group": "policy",
                        "version": "v1",
                        "kind": "Eviction",
                        "verbs": ["create"],
                    }
                )
            if "log" in t.extra_subresources:
                resources.append(
                    {"name": f"{t.plural}/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
                )
            if "binding" in t.extra_subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/binding",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "Binding",
                        "verbs": ["create"],
                    }
                )
        if not resources:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

"""OpenAPI v3: `/openapi/v3` and one document per group-version, built from the served types.

Two clients read it. kubectl (strict field validation, its default) looks for a PATCH
operation tagged with the object's x-kubernetes-group-version-kind and a
`fieldValidation` parameter; finding one, it sends `?fieldValidation=Strict` and leaves
validation to us. `kubectl explain` finds the kind the same way, then the component
schema carrying that x-kubernetes-group-version-kind: for a CRD that is its
openAPIV3Schema with apiVersion, kind and metadata (a $ref to ObjectMeta) filled in, as
kube-apiextensions' builder does. Built-in kinds publish no schema, so `kubectl
explain pods` still says their GVK is not in the OpenAPI schema.
"""

from __future__ import annotations

import copy
import hashlib
import json

from aiohttp import web

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj
from respawn_local.apiserver.openapi_meta import META_SCHEMAS
from respawn_local.apiserver.resources import ResourceType

_CONVENTIONS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
# The descriptions kube gives the fields every object has (the same on built-ins and CRDs).
_TYPE_META = {
    "apiVersion": {
        "description": "APIVersion defines the versioned schema of this representation of an object. Servers "
        "should convert recognized schemas to the latest internal value, and may reject unrecognized values. "
        f"More info: {_CONVENTIONS}#resources",
        "type": "string",
    },
    "kind": {
        "description": "Kind is a string value representing the REST resource this object represents. Servers "
        "may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. "
        f"More info: {_CONVENTIONS}#types-kinds",
        "type": "string",
    },
    "metadata": {
        "description": f"Standard object's metadata. More info: {_CONVENTIONS}#metadata",
        "default": {},
        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
    },
}


def schema_name(group: str, version: str, kind: str) -> str:
    """kube's component name for a CRD's kind: the group reversed, e.g. `dev.respawn.v1alpha1.PipelineRun`."""
    return ".".join([*reversed(group.split(".")), version, kind])


def crd_schema(schema: Obj, gvk: Obj) -> Obj:
    """A CRD version's openAPIV3Schema as kube publishes it for `gvk`."""
    published = copy.deepcopy(schema)
    published["properties"] = {**(published.get("properties") or {}), **copy.deepcopy(_TYPE_META)}
    published["x-kubernetes-group-version-kind"] = [gvk]
    return published


class OpenApiMixin(ServerBase):
    """`ApiServer`'s OpenAPI v3 documents."""

    def _openapi_v3(self, rest: list[str]) -> web.Response:
        gvs: dict[str, list[ResourceType]] = {}
        for t in self.types.values():
            for v in t.versions:
                gvs.setdefault(f"apis/{t.group}/{v}" if t.group else f"api/{v}", []).append(t)
        if not rest:
            paths = {}
            for gv, types in sorted(gvs.items()):
                # Like kube's: the hash changes with the document, so kubectl's cache notices a CRD update.
                digest = hashlib.sha256(json.dumps(self._openapi_document(gv, types)).encode()).hexdigest()[:16]
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.upper()}"}
            return web.json_response({"paths": paths})
        gv = "/".join(rest)
        if gv not in gvs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(self._openapi_document(gv, gvs[gv]))

    @staticmethod
    def _openapi_document(gv: str, types: list[ResourceType]) -> Obj:
        version = gv.rsplit("/", 1)[-1]
        paths: Obj = {}
        schemas: Obj = {}
        for t in types:
            base = (
                f"/{gv}/namespaces/{{namespace}}/{t.plural}/{{name}}" if t.namespaced else f"/{gv}/{t.plural}/{{name}}"
            )
            params = [
                {"name": n, "in": "query", "schema": {"type": "string"}}
                for n in ("dryRun", "fieldManager", "fieldValidation", "force")
            ]
            gvk = {"group": t.group, "version": version, "kind": t.kind}
            op = {
                "operationId": f"patch{t.kind}",
                "parameters": params,
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            }
            paths[base] = {"patch": op, "put": {**op, "operationId": f"replace{t.kind}", "x-kubernetes-action": "put"}}
            if version in t.schemas:
                schemas[schema_name(t.group, version, t.kind)] = crd_schema(t.schemas[version], gvk)
        if schemas:
            schemas.update(copy.deepcopy(META_SCHEMAS))
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

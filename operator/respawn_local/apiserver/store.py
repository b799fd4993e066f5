"""The object store: create, update, patch, delete, list; uids (resourceVersions and events: `base`)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj, now_rfc3339, random_suffix
from respawn_local.apiserver.patches import json_patch, merge_patch, strategic_merge_patch
from respawn_local.apiserver.resources import ResourceType
from respawn_local.apiserver.selectors import parse_field_selector, parse_label_selector


class StoreMixin(ServerBase):
    """`ApiServer`'s writes and lists (the state and reads are `ServerBase`'s)."""

    def _check_namespace(self, rtype: ResourceType, ns: str | None) -> str:
        if rtype.namespaced:
            if not ns:
                raise ApiError(
                    400, "BadRequest", "the server could not find the requested resource: namespace is required"
                )
            namespace = self.store[("", "namespaces")].get(("", ns))
            if self.strict_namespaces and namespace is None:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {ns} because it is being terminated",
                    {
                        "name": ns,
                        "kind": "namespaces",
                        "causes": [
                            {
                                "reason": "NamespaceTerminating",
                                "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace",
                            }
                        ],
                    },
                )
            return ns
        return ""

    def _create(self, rtype: ResourceType, ns: str | None, body: Obj, version: str | None = None) -> Obj:
        ns = self._check_namespace(rtype, ns)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(20):
                meta["name"] = meta["generateName"] + random_suffix()
                if (ns, meta["name"]) not in self.store[rtype.key]:
                    break
        obj["apiVersion"] = rtype.api_version(version)
        obj["kind"] = rtype.kind
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        meta["uid"] = str(uuid.uuid4())
        if rtype.status_subresource and (
            rtype.crd
            or rtype.key in (("", "pods"), ("batch", "jobs"), ("apiextensions.k8s.io", "customresourcedefinitions"))
        ):
            obj.pop("status", None)  # like the real strategies' PrepareForCreate; nodes keep theirs
        self._apply_defaults(rtype, obj)
        if rtype.key == ("batch", "jobs"):
            self._finish_job_create(obj)
        obj = self._validate(rtype, obj, version)
        meta = obj["metadata"]
        name = meta["name"]
        if (ns, name) in self.store[rtype.key]:
            details: Obj = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists', details)
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = obj
        self.uids[meta["uid"]] = (rtype.key, ns, name)
        self._emit("ADDED", rtype, obj)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._serve_crd(obj)
        if rtype.key == ("", "namespaces"):
            # The ServiceAccount controller gives every namespace a `default` account.
            self._create(self.types[("", "serviceaccounts")], name, {"metadata": {"name": "default"}})
        return obj

    def _update(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        new: Obj,
        subresource: str | None,
        version: str | None = None,
        expected_rv: str | None = None,
    ) -> Obj:
        """Replace an object (PUT semantics); `new` is the full desired object."""
        ns = "" if not rtype.namespaced else (ns or "")
        old = self._get(rtype, ns, name)
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        rv = expected_rv if expected_rv is not None else meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            details: Obj = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                details,
            )
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if rtype.status_subresource:
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            else:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        meta = new.setdefault("metadata", {})
        # Immutable/system metadata comes from the stored object.
        for key in (
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["name"] = name
        if old["metadata"].get("deletionTimestamp"):
            # Finalizers can only be removed from an object being deleted, not added.
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)}',
                )
        new["apiVersion"] = rtype.api_version(version)
        new["kind"] = rtype.kind
        if rtype.key == ("", "pods"):
            self._apply_defaults(rtype, new)
        new = self._validate(rtype, new, version)
        self._check_immutable(rtype, old, new)
        meta = new["metadata"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if not meta.get("ownerReferences"):
            meta.pop("ownerReferences", None)
        if self._spec_changed(rtype, old, new):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if _strip_rv(new) == _strip_rv(old):
            return old  # no-op writes do not bump resourceVersion, like kube
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = new
        self._emit("MODIFIED", rtype, new, old)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._serve_crd(new)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and (rtype.key != ("", "pods") or meta.get("deletionGracePeriodSeconds", 0) == 0)
        ):
            return self._remove(rtype, new)
        return new

    @staticmethod
    def _spec_changed(rtype: ResourceType, old: Obj, new: Obj) -> bool:
        skip = {"metadata", "apiVersion", "kind"}
        if rtype.status_subresource:
            skip.add("status")
        a = {k: v for k, v in old.items() if k not in skip}
        b = {k: v for k, v in new.items() if k not in skip}
        return a != b

    def _patch(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        subresource: str | None,
        version: str | None = None,
    ) -> Obj:
        old = self._get(rtype, ns if rtype.namespaced else "", name)
        current = copy.deepcopy(old)
        current["apiVersion"] = rtype.api_version(version)
        try:
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise ValueError("a JSON patch must be a list of operations")
                result = json_patch(current, patch)
            elif patch_type == "strategic":
                if rtype.crd:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources: use a merge patch",
                    )
                result = strategic_merge_patch(current, patch)
            else:
                result = merge_patch(current, patch)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
            ) from None
        if not isinstance(result, dict):
            raise ApiError(400, "BadRequest", "patch result is not an object")
        rv = (result.get("metadata") or {}).get("resourceVersion")
        if rv is None or rv == old["metadata"]["resourceVersion"]:
            rv = None
        return self._update(rtype, ns, name, result, subresource, version, expected_rv=rv or None)

    def _remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Take an object out of storage for good (finalizers are done)."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self.store[rtype.key].pop(key, None)
        if old is None:
            return obj
        self.uids.pop(meta["uid"], None)
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", rtype, gone)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unserve_crd(old)
        return gone

    def _delete(self, rtype: ResourceType, ns: str | None, name: str, options: Obj) -> Obj:
        ns = (ns or "") if rtype.namespaced else ""  # _get looks a None namespace up as ""
        obj = self._get(rtype, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: {obj["metadata"]["uid"]}',
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, ResourceVersion in object meta: {obj["metadata"]["resourceVersion"]}',
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            # batch/v1 Jobs default to orphaning their pods (kept for backward
            # compatibility by the real server); everything else is Background.
            policy = "Orphan" if rtype.key == ("batch", "jobs") else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f"propagationPolicy: Unsupported value: {policy!r}")
        if policy == "Orphan":
            self._orphan_dependents(obj["metadata"]["uid"])
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers and self._has_dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")

        if rtype.key == ("", "pods"):
            grace = options.get("gracePeriodSeconds")
            if grace is None:
                grace = new.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            node = new.get("spec", {}).get("nodeName")
            phase = new.get("status", {}).get("phase")
            graceful = (
                grace > 0 and node and ("", node) in self.store[("", "nodes")] and phase not in ("Succeeded", "Failed")
            )
            if not graceful:
                grace = 0
            current = meta.get("deletionGracePeriodSeconds")
            if current is None or grace < current:
                meta["deletionGracePeriodSeconds"] = grace
                meta["deletionTimestamp"] = now_rfc3339(grace)
            if meta["deletionGracePeriodSeconds"] == 0 and not finalizers:
                return self._remove(rtype, obj)
        else:
            namespace_content = rtype.key == ("", "namespaces") and (new.get("spec") or {}).get("finalizers")
            if rtype.key == ("", "namespaces") and name in ("default", "kube-system", "kube-public"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    {"name": name, "kind": "namespaces"},
                )
            if not finalizers and not namespace_content:
                return self._remove(rtype, obj)
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta.setdefault("deletionGracePeriodSeconds", 0)
            if rtype.key == ("", "namespaces"):
                # The namespace controller empties it, then drops spec.finalizers (GC loop).
                new.setdefault("status", {})["phase"] = "Terminating"
        meta["finalizers"] = finalizers
        if not finalizers:
            meta.pop("finalizers")
        if not obj["metadata"].get("deletionTimestamp"):
            # Like kube's BeforeDelete: a graceful deletion bumps the generation.
            meta["generation"] = meta.get("generation", 1) + 1
        if _strip_rv(new) == _strip_rv(obj):
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        self.store[rtype.key][(ns, name)] = new
        self._emit("MODIFIED", rtype, new, obj)
        return new

    def _has_dependents(self, uid: str) -> bool:
        return any(
            ref.get("uid") == uid
            for objs in self.store.values()
            for o in objs.values()
            for ref in o["metadata"].get("ownerReferences") or []
        )

    def _orphan_dependents(self, uid: str) -> None:
        for rkey, objs in list(self.store.items()):
            for key, o in list(objs.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    kept = [r for r in refs if r.get("uid") != uid]
                    self._patch(
                        self.types[rkey], key[0], key[1], "merge", {"metadata": {"ownerReferences": kept or None}}, None
                    )

    def _list(
        self, rtype: ResourceType, ns: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[Obj]:
        lsel = parse_label_selector(label_selector)
        fsel = parse_field_selector(field_selector, rtype.field_selectors)
        items = [
            o
            for (ons, _), o in sorted(self.store[rtype.key].items())
            if (ns is None or not rtype.namespaced or ons == ns) and lsel(o["metadata"].get("labels") or {}) and fsel(o)
        ]
        return items


def _strip_rv(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}

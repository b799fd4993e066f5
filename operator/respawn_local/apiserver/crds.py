"""CustomResourceDefinitions: checking them and serving (or no longer serving) their resources."""

from __future__ import annotations

import copy

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import Obj, now_rfc3339
from respawn_local.apiserver.resources import ResourceType


class CrdMixin(ServerBase):
    """`ApiServer`'s CRD handling."""

    def _crd_problems(self, crd: Obj) -> list[Obj]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        problems = []
        for field in ("group", "scope"):
            if not spec.get(field):
                problems.append({"reason": "FieldValueRequired", "message": "Required value", "field": f"spec.{field}"})
        for field in ("plural", "kind"):
            if not names.get(field):
                problems.append(
                    {"reason": "FieldValueRequired", "message": "Required value", "field": f"spec.names.{field}"}
                )
        if spec.get("scope") not in (None, "Namespaced", "Cluster"):
            problems.append(
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.scope",
                    "message": f"Unsupported value: {spec.get('scope')!r}",
                }
            )
        if (
            names.get("plural")
            and spec.get("group")
            and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}"
        ):
            problems.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {crd['metadata']['name']!r}: must be spec.names.plural+\".\"+spec.group",
                }
            )
        versions = spec.get("versions") or []
        if not versions:
            problems.append({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.versions"})
        elif sum(1 for v in versions if v.get("storage")) != 1:
            problems.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.versions",
                    "message": "Invalid value: must have exactly one version marked as storage version",
                }
            )
        for i, v in enumerate(versions):
            if not (v.get("schema") or {}).get("openAPIV3Schema"):
                problems.append(
                    {
                        "reason": "FieldValueRequired",
                        "field": f"spec.versions[{i}].schema.openAPIV3Schema",
                        "message": "Required value: schemas are required",
                    }
                )
        return problems

    def _serve_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec["versions"] if v.get("served", True)]
        # Preferred version first: kube sorts by version priority; storage first is close enough.
        served.sort(key=lambda v: (not v.get("storage"), v["name"]))
        rtype = ResourceType(
            group=spec["group"],
            versions=[v["name"] for v in served],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=list(names.get("shortNames") or []),
            categories=list(names.get("categories") or []),
            status_subresource=any("status" in (v.get("subresources") or {}) for v in served),
            schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in served},
            printer_columns={v["name"]: v.get("additionalPrinterColumns") or [] for v in served},
            crd=True,
        )
        self.types[rtype.key] = rtype
        # The real server reports acceptance in status; kopf and kubectl wait for Established.
        meta = crd["metadata"]
        key = ("", meta["name"])
        stored = self.store[("apiextensions.k8s.io", "customresourcedefinitions")].get(key)
        if stored is not None and not (stored.get("status") or {}).get("acceptedNames"):
            cond_time = now_rfc3339()
            old = stored
            stored = copy.deepcopy(stored)
            stored["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": cond_time,
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": cond_time,
                    },
                ],
                "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            }
            stored["metadata"]["resourceVersion"] = str(self._next_rv())
            self.store[("apiextensions.k8s.io", "customresourcedefinitions")][key] = stored
            self._emit("MODIFIED", self.types[("apiextensions.k8s.io", "customresourcedefinitions")], stored, old)

    def _unserve_crd(self, crd: Obj) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rtype = self.types.get(key)
        if rtype is None:
            return
        for obj in list(self.store[key].values()):
            self._remove(rtype, obj)
        del self.types[key]
        for w in list(self._watchers):
            if w.rkey == key:
                w.queue.put_nowait(None)  # a real server ends watches of a resource it stops serving

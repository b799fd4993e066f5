"""The garbage collector (ownerReferences, foreground deletion) and the namespace controller."""

from __future__ import annotations

import asyncio
import copy

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError


class GarbageCollectorMixin(ServerBase):
    """`ApiServer`'s controllers that run inside the API server process."""

    async def _gc_loop(self) -> None:
        assert self._gc_wake is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._gc_wake.wait(), timeout=self.gc_interval * 5)
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._gc_wake.clear()
            await asyncio.sleep(self.gc_interval)  # batch bursts of deletions
            try:
                self.collect_garbage()
            except Exception:  # pragma: no cover - GC must never die
                import traceback

                traceback.print_exc()

    def collect_garbage(self) -> int:
        """One pass of the ownerReference garbage collector; returns the actions taken."""
        actions = 0
        for rkey, objs in list(self.store.items()):
            rtype = self.types.get(rkey)
            if rtype is None:
                continue
            for (ns, name), o in list(objs.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if not refs:
                    continue
                alive = [r for r in refs if r.get("uid") in self.uids]
                if not alive:
                    if not o["metadata"].get("deletionTimestamp"):
                        try:
                            self._delete(rtype, ns, name, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
                    continue
                # Dependents of an owner being deleted in the foreground go first.
                for r in alive:
                    okey, ons, oname = self.uids[r["uid"]]
                    owner = self.store[okey].get((ons, oname))
                    if (
                        owner
                        and "foregroundDeletion" in (owner["metadata"].get("finalizers") or [])
                        and not o["metadata"].get("deletionTimestamp")
                    ):
                        try:
                            self._delete(rtype, ns, name, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
                        break
                if len(alive) != len(refs) and (ns, name) in objs:
                    try:
                        self._patch(rtype, ns, name, "merge", {"metadata": {"ownerReferences": alive}}, None)
                        actions += 1
                    except ApiError:
                        pass
        # Owners waiting in the foreground: done once no blocking dependents remain.
        for rkey, objs in list(self.store.items()):
            for (ns, name), o in list(objs.items()):
                fins = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fins and o["metadata"].get("deletionTimestamp"):
                    uid = o["metadata"]["uid"]
                    blocking = any(
                        ref.get("uid") == uid and ref.get("blockOwnerDeletion")
                        for objs2 in self.store.values()
                        for d in objs2.values()
                        for ref in d["metadata"].get("ownerReferences") or []
                    )
                    if not blocking:
                        rest = [f for f in fins if f != "foregroundDeletion"]
                        self._patch(
                            self.types[rkey], ns, name, "merge", {"metadata": {"finalizers": rest or None}}, None
                        )
                        actions += 1
        actions += self._finalize_namespaces()
        return actions

    def _finalize_namespaces(self) -> int:
        """The namespace controller: empty terminating namespaces, then let them go."""
        actions = 0
        namespaces = self.types[("", "namespaces")]
        for (_, ns_name), namespace in list(self.store[namespaces.key].items()):
            if not namespace["metadata"].get("deletionTimestamp"):
                continue
            remaining = 0
            for rkey, objs in list(self.store.items()):
                rtype = self.types.get(rkey)
                if rtype is None or not rtype.namespaced:
                    continue
                for (ons, oname), o in list(objs.items()):
                    if ons != ns_name:
                        continue
                    remaining += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        try:
                            self._delete(rtype, ons, oname, {"propagationPolicy": "Background"})
                            actions += 1
                        except ApiError:
                            pass
            if remaining == 0 and (namespace.get("spec") or {}).get("finalizers"):
                new = copy.deepcopy(namespace)
                new["spec"]["finalizers"] = []
                self._update(namespaces, None, ns_name, new, None)
                if ("", ns_name) in self.store[namespaces.key] and not self.store[namespaces.key][("", ns_name)][
                    "metadata"
                ].get("finalizers"):
                    self._remove(namespaces, self.store[namespaces.key][("", ns_name)])
                actions += 1
        return actions

"""Context values <-> commit JSON plus content-addressed artifacts.

A commit must stay small (it is the compare-and-set unit), so every value that is
not small JSON becomes an artifact named by the sha256 of its bytes and the commit
holds a reference to it. Encoding runs in two phases:

* `snapshot(value)` runs on the step's thread, between steps: it captures the
  structure, serialises small JSON at once, and freezes numpy arrays (read-only)
  so the next step cannot change bytes that are still being uploaded.
* `Encoder.resolve(plan)` runs on the commit thread: it hashes and uploads the
  leaves in parallel, skipping any whose bytes are already stored.

Encoded nodes (one key each, so they cannot be mistaken for user dicts):
  {"json": v}                               small JSON, inline
  {"b64": "..."}                            small bytes, inline
  {"ref": {"sha256", "size", "type": "json"|"bytes"|"ndarray", "dtype"?, "shape"?}}
  {"list": [node, ...]}                     list/tuple holding non-JSON values
  {"dict": {key: node}}                     dict holding non-JSON values
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

INLINE_JSON_LIMIT = 64 * 1024
"""Serialised JSON up to this size is kept inside the commit object."""
INLINE_BYTES_LIMIT = 1024
"""bytes values up to this size are kept inside the commit (base64)."""


def artifact_path(sha256: str) -> str:
    """Where an artifact lives, relative to the run's folder."""
    return f"artifacts/{sha256[:2]}/{sha256}"


class UnsupportedValue(TypeError):
    """A context value of a type that cannot be checkpointed."""


@dataclass
class _Leaf:
    """A value whose bytes go to an artifact, decided at snapshot time."""

    obj: Any
    kind: str  # "ndarray" | "bytes" | "json"
    data: bytes | None = None  # for "json": the serialised text


def _is_plain_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    return False


def snapshot(value: Any, where: str = "value") -> Any:
    """Capture `value` for a later `resolve`; raises UnsupportedValue naming `where`."""
    if isinstance(value, np.generic):
        value = value.item()
    if _is_plain_json(value):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if len(text) <= INLINE_JSON_LIMIT:
            return {"json": json.loads(text)}
        return _Leaf(obj=None, kind="json", data=text.encode())
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise UnsupportedValue(f"{where}: numpy arrays of dtype object cannot be checkpointed")
        if value.flags.writeable:
            # Freeze it: the upload may still be reading these bytes while the next
            # step runs. A step that wants to change it in place makes a copy.
            value.flags.writeable = False
        return _Leaf(obj=value, kind="ndarray")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) <= INLINE_BYTES_LIMIT:
            return {"b64": base64.b64encode(data).decode()}
        return _Leaf(obj=data, kind="bytes")
    if isinstance(value, (list, tuple)):
        return {"list": [snapshot(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnsupportedValue(f"{where}: dict keys must be str, got {type(k).__name__}")
            out[k] = snapshot(v, f"{where}[{k!r}]")
        return {"dict": out}
    raise UnsupportedValue(
        f"{where}: {type(value).__name__} cannot be checkpointed; use JSON values, "
        "numpy arrays, bytes, or lists/dicts of them")


def _leaf_bytes(leaf: _Leaf) -> memoryview | bytes:
    if leaf.kind == "ndarray":
        arr: np.ndarray = np.ascontiguousarray(leaf.obj)  # no copy when already contiguous
        return arr.data.cast("B") if arr.size else b""
    data = leaf.obj if leaf.kind == "bytes" else leaf.data
    assert isinstance(data, bytes)
    return data


def _ref_meta(leaf: _Leaf, sha: str, size: int) -> dict[str, Any]:
    ref: dict[str, Any] = {"sha256": sha, "size": size, "type": leaf.kind}
    if leaf.kind == "ndarray":
        ref["dtype"] = leaf.obj.dtype.str
        ref["shape"] = list(leaf.obj.shape)
    return ref


class Encoder:
    """Resolves snapshots to JSON, uploading artifacts once per content.

    It remembers which objects it has already hashed (by identity, holding a
    reference so the id stays valid) and which hashes exist in the store, so a
    commit where nothing large changed hashes and uploads nothing.
    """

    def __init__(self, put: Callable[[str, bytes | memoryview], None],
                 known: set[str] | None = None) -> None:
        self._put = put
        self.known: set[str] = set(known or ())
        self._by_id: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._inflight: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, obj: Any, ref: dict[str, Any]) -> None:
        """Record that `obj` (e.g. an array loaded on resume) is stored as `ref`."""
        with self._lock:
            self._by_id[id(obj)] = (obj, ref)
            self.known.add(ref["sha256"])

    def resolve(self, plan: Any, pool: Executor | None = None,
                uploaded_shas: list[str] | None = None) -> tuple[Any, int]:
        """Turn a snapshot into JSON; returns (json_node, bytes uploaded).

        The sha256 of every artifact this call stored is appended to `uploaded_shas`.
        """
        leaves: list[_Leaf] = []
        _collect(plan, leaves)
        refs: dict[int, dict[str, Any]] = {}
        uploaded = 0
        work = []
        for leaf in leaves:
            hit = self._by_id.get(id(leaf.obj)) if leaf.kind != "json" else None
            if hit is not None and hit[0] is leaf.obj:
                refs[id(leaf)] = hit[1]
            else:
                work.append(leaf)
        results = pool.map(self._store_leaf, work) if pool else map(self._store_leaf, work)
        for leaf, (ref, n) in zip(work, results):
            refs[id(leaf)] = ref
            uploaded += n
            if n and uploaded_shas is not None:
                uploaded_shas.append(ref["sha256"])
        return _build(plan, refs), uploaded

    def _store_leaf(self, leaf: _Leaf) -> tuple[dict[str, Any], int]:
        data = _leaf_bytes(leaf)
        sha = hashlib.sha256(data).hexdigest()
        ref = _ref_meta(leaf, sha, len(data) if isinstance(data, bytes) else data.nbytes)
        with self._lock:
            # Two equal values in one commit: upload once (resolve waits for both
            # leaves before the commit is written, so skipping the twin is safe).
            present = sha in self.known or sha in self._inflight
            if not present:
                self._inflight.add(sha)
        n = 0
        if not present:
            try:
                self._put(artifact_path(sha), data)
            finally:
                with self._lock:
                    self._inflight.discard(sha)
            n = ref["size"]
        with self._lock:
            self.known.add(sha)
            if leaf.kind != "json":
                self._by_id[id(leaf.obj)] = (leaf.obj, ref)
        return ref, n

    def forget_except(self, keep: Any) -> None:
        """Drop identity entries not referenced by `keep` (a resolved node), freeing memory."""
        live: set[str] = set()
        _ref_shas(keep, live)
        with self._lock:
            self._by_id = {k: v for k, v in self._by_id.items() if v[1]["sha256"] in live}


def _collect(plan: Any, out: list[_Leaf]) -> None:
    if isinstance(plan, _Leaf):
        out.append(plan)
    elif isinstance(plan, dict) and "list" in plan:
        for p in plan["list"]:
            _collect(p, out)
    elif isinstance(plan, dict) and "dict" in plan:
        for p in plan["dict"].values():
            _collect(p, out)


def _build(plan: Any, refs: dict[int, dict[str, Any]]) -> Any:
    if isinstance(plan, _Leaf):
        return {"ref": refs[id(plan)]}
    if "list" in plan:
        return {"list": [_build(p, refs) for p in plan["list"]]}
    if "dict" in plan:
        return {"dict": {k: _build(p, refs) for k, p in plan["dict"].items()}}
    return plan


def _ref_shas(node: Any, out: set[str]) -> None:
    if not isinstance(node, dict):
        return
    if "ref" in node:
        out.add(node["ref"]["sha256"])
    elif "list" in node:
        for n in node["list"]:
            _ref_shas(n, out)
    elif "dict" in node:
        for n in node["dict"].values():
            _ref_shas(n, out)


def referenced_artifacts(node: Any) -> dict[str, int]:
    """sha256 -> size of every artifact a resolved node refers to."""
    found: dict[str, int] = {}

    def walk(n: Any) -> None:
        if not isinstance(n, dict):
            return
        if "ref" in n:
            found[n["ref"]["sha256"]] = n["ref"]["size"]
        for child in n.get("list", ()) if "list" in n else ():
            walk(child)
        if "dict" in n:
            for child in n["dict"].values():
                walk(child)

    walk(node)
    return found


class CorruptArtifact(ValueError):
    """An artifact is missing, truncated or does not match its hash."""


def decode(node: Any, get: Callable[[str], bytes], encoder: Encoder | None = None,
           pool: Executor | None = None) -> Any:
    """Rebuild a value from its JSON node, verifying every artifact's sha256."""
    leaves: list[dict[str, Any]] = []

    def collect(n: Any) -> None:
        if "ref" in n:
            leaves.append(n["ref"])
        elif "list" in n:
            for c in n["list"]:
                collect(c)
        elif "dict" in n:
            for c in n["dict"].values():
                collect(c)

    collect(node)
    fetch = pool.map if pool else map
    loaded = dict(zip((r["sha256"] for r in leaves), fetch(lambda r: _load_ref(r, get), leaves)))

    def build(n: Any) -> Any:
        if "json" in n:
            return n["json"]
        if "b64" in n:
            return base64.b64decode(n["b64"])
        if "ref" in n:
            value = loaded[n["ref"]["sha256"]]
            if encoder is not None and not isinstance(value, (dict, list, str, int, float)):
                encoder.remember(value, n["ref"])
            return value
        if "list" in n:
            return [build(c) for c in n["list"]]
        if "dict" in n:
            return {k: build(c) for k, c in n["dict"].items()}
        raise CorruptArtifact(f"unknown node {sorted(n)!r}")

    return build(node)


def _load_ref(ref: dict[str, Any], get: Callable[[str], bytes]) -> Any:
    sha = ref["sha256"]
    data = get(artifact_path(sha))
    if len(data) != ref["size"] or hashlib.sha256(data).hexdigest() != sha:
        raise CorruptArtifact(f"artifact {sha[:12]}… is damaged (size or sha256 mismatch)")
    if ref["type"] == "ndarray":
        arr = np.frombuffer(data, dtype=np.dtype(ref["dtype"])).reshape(ref["shape"])
        return arr  # read-only, like every array after a commit
    if ref["type"] == "bytes":
        return data
    return json.loads(data)

"""A faithful, in-process Kubernetes API server emulator on aiohttp.

It speaks the real REST protocol over HTTP on 127.0.0.1, so kopf, the `kubernetes`
python client and `kubectl` all talk to it unmodified. It keeps the semantics our
operator relies on: uids, one global resourceVersion counter, generation, 409 on
stale writes, CRD schemas (validation, pruning, defaults), status subresources,
label/field selectors, watches with bounded history (410 Gone), finalizers and
ownerReference garbage collection, graceful pod deletion and the eviction API.

What it deliberately leaves out is written down in docs/emulator.md.

Use `ApiServer` inside a running event loop, or `ApiServerThread` from sync code
(tests, the local demo): it runs the server in a background thread.

The package's modules follow the server's parts: `base` (the state every part
shares: resourceVersions, the event log watches replay, reads), `store` (writes,
lists, uids), `admission` (validation and defaulting on write), `schema` (CRD
structural schemas), `crds`, `watch`, `collector` (garbage collection, the namespace
controller), `http` (routing, authentication, RBAC), `discovery`, `openapi` (v3
documents from the CRDs' schemas, for `kubectl explain`), `subresources`
(token, log, eviction, binding), `tables`, `patches`, `selectors`, `protobuf`,
`faults`. Each part is a mixin on `base.ServerBase`; `server` puts `ApiServer`
together and `thread` runs it for sync callers.
Everything other code uses is importable from `respawn_local.apiserver` itself.
"""

from respawn_local.apiserver.base import Watcher, WatchEvent
from respawn_local.apiserver.common import ApiError, Obj, human_duration, now_rfc3339, parse_rfc3339, random_suffix
from respawn_local.apiserver.faults import FaultRule, Faults
from respawn_local.apiserver.patches import json_patch, merge_patch, strategic_merge_patch, strip_directives
from respawn_local.apiserver.protobuf import decode_protobuf
from respawn_local.apiserver.resources import ResourceType
from respawn_local.apiserver.schema import apply_schema
from respawn_local.apiserver.selectors import parse_field_selector, parse_label_selector
from respawn_local.apiserver.server import ApiServer
from respawn_local.apiserver.thread import ApiServerThread

__all__ = [
    "ApiError",
    "ApiServer",
    "ApiServerThread",
    "FaultRule",
    "Faults",
    "Obj",
    "ResourceType",
    "WatchEvent",
    "Watcher",
    "apply_schema",
    "decode_protobuf",
    "human_duration",
    "json_patch",
    "merge_patch",
    "now_rfc3339",
    "parse_field_selector",
    "parse_label_selector",
    "parse_rfc3339",
    "random_suffix",
    "strategic_merge_patch",
    "strip_directives",
]

"""Running in a thread, for sync callers."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from respawn_local.apiserver.common import ApiError, Obj
from respawn_local.apiserver.faults import FaultRule
from respawn_local.apiserver.server import ApiServer


class ApiServerThread:
    """Run an `ApiServer` in a background thread with its own event loop.

    The sync helpers (`get`, `list`, `create`, `patch`, `replace`, `delete`) go straight
    to the store on the server's loop (not over HTTP) and raise `ApiError` like the
    server would answer. `resource` is a plural, singular, kind, short name or
    `plural.group` (e.g. "pods", "job", "pipelineruns.respawn.dev").
    """

    def __init__(self, **server_kwargs: Any) -> None:
        self.server = ApiServer(**server_kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.faults = _ThreadFaults(self)

    def __enter__(self) -> ApiServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> str:
        """Start serving; return the URL."""
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as e:  # pragma: no cover
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="respawn-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self.url

    def stop(self) -> None:
        """Stop the server and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the server loop and return its result."""
        assert self._loop is not None

        async def wrapper() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    @property
    def admin_token(self) -> str:
        """Bearer token of the emulator's `system:masters` admin."""
        return self.server.admin_token

    @property
    def ca_file(self) -> str | None:
        """The CA that signs the emulator's certificate (None: plain HTTP)."""
        return self.server.tls.ca_file if self.server.tls else None

    @property
    def denials(self) -> list[tuple[str, str, int]]:
        """Requests refused so far as (user, what, 401/403)."""
        return self.call(lambda: list(self.server.denials))  # type: ignore[no-any-return]

    def write_kubeconfig(self, path: str, namespace: str = "default", token: str | None = None) -> str:
        """Write a kubeconfig for this server: the admin's token unless another is given."""
        import yaml

        cluster: Obj = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "respawn-local",
            "clusters": [{"name": "respawn-local", "cluster": cluster}],
            "users": [{"name": "respawn-local", "user": {"token": token or self.admin_token}}],
            "contexts": [
                {
                    "name": "respawn-local",
                    "context": {"cluster": "respawn-local", "user": "respawn-local", "namespace": namespace},
                }
            ],
        }
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    def service_account_token(
        self, namespace: str, name: str, pod: str | None = None, expiration_seconds: int = 3600
    ) -> str:
        """A TokenRequest token for ServiceAccount `namespace/name` (bound to `pod` if given)."""
        spec: Obj = {"expirationSeconds": expiration_seconds}
        if pod:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod}
        result = self.call(self.server.token_request, namespace, name, {"spec": spec})
        return str(result["status"]["token"])

    # -- sync store helpers ------------------------------------------------

    def get(self, resource: str, name: str, namespace: str | None = "default") -> Obj:
        """One object (a deep copy); raises ApiError 404."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._get(rtype, namespace if rtype.namespaced else "", name))

        return self.call(op)  # type: ignore[no-any-return]

    def get_or_none(self, resource: str, name: str, namespace: str | None = "default") -> Obj | None:
        """Like `get`, None when absent."""
        try:
            return self.get(resource, name, namespace)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """Objects of a type (all namespaces when namespace is None)."""

        def op() -> list[Obj]:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._list(rtype, namespace, label_selector, field_selector))

        return self.call(op)  # type: ignore[no-any-return]

    def create(self, body: Obj, namespace: str | None = None) -> Obj:
        """Create from a manifest (apiVersion/kind pick the type)."""

        def op() -> Obj:
            rtype = self.server.type_for(body["apiVersion"], body["kind"])
            ns = namespace or (body.get("metadata") or {}).get("namespace") or ("default" if rtype.namespaced else None)
            version = body["apiVersion"].rsplit("/", 1)[-1]
            obj = self.server._create(rtype, ns, body, version)
            return copy.deepcopy(obj)

        return self.call(op)  # type: ignore[no-any-return]

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = "default",
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> Obj:
        """Patch ("merge", "json" or "strategic"); subresource="status" for /status."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._patch(rtype, namespace, name, patch_type, patch, subresource))

        return self.call(op)  # type: ignore[no-any-return]

    def replace(
        self, resource: str, name: str, body: Obj, namespace: str | None = "default", subresource: str | None = None
    ) -> Obj:
        """PUT semantics (409 on a stale metadata.resourceVersion)."""

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._update(rtype, namespace, name, body, subresource))

        return self.call(op)  # type: ignore[no-any-return]

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = "default",
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> Obj:
        """DELETE with the same options the HTTP API takes."""
        options: Obj = {}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds

        def op() -> Obj:
            rtype = self.server.resolve(resource)
            return copy.deepcopy(self.server._delete(rtype, namespace, name, options))

        return self.call(op)  # type: ignore[no-any-return]

    def request_counts(self, agent: str | None = None) -> dict[tuple[str, str], int]:
        """Requests by (verb, resource) so far; only those from `agent` (User-Agent product) if given."""

        def op() -> dict[tuple[str, str], int]:
            if agent is None:
                return dict(self.server.requests)
            return {(v, r): n for (a, v, r), n in self.server.requests_by_agent.items() if a == agent}

        return self.call(op)  # type: ignore[no-any-return]

    def reset_counts(self) -> None:
        """Zero the request counters (e.g. between benchmark runs)."""

        def op() -> None:
            self.server.requests.clear()
            self.server.requests_by_agent.clear()

        self.call(op)


class _ThreadFaults:
    """`Faults`, callable from any thread."""

    def __init__(self, owner: ApiServerThread) -> None:
        self._owner = owner

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        match: Callable[[web.Request], bool] | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """See `Faults.fail_next`."""
        return self._owner.call(self._owner.server.faults.fail_next, count, status, match, retry_after)  # type: ignore[no-any-return]

    def close_watches(self) -> int:
        """See `Faults.close_watches`."""
        return self._owner.call(self._owner.server.faults.close_watches)  # type: ignore[no-any-return]

    def pause(self, seconds: float, refuse: bool = False) -> None:
        """See `Faults.pause` (returns at once; the pause runs on the server)."""
        self._owner.call(self._owner.server.faults.pause, seconds, refuse)

    @property
    def injected(self) -> int:
        """How many requests got an injected failure."""
        return self._owner.server.faults.injected

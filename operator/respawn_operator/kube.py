"""A small async Kubernetes client over aiohttp, and the ONE place API errors are sorted.

kopf watches and posts events with its own client; our reconciler needs a handful of
plain REST calls (get/list/create/patch/delete), so this wraps exactly those. Credentials
come from :mod:`respawn_operator.credentials`, the same loader kopf's login uses.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import urllib.parse
from typing import Any

import aiohttp
import kopf

from respawn_operator import credentials
from respawn_operator.credentials import Credentials
from respawn_operator.workqueue import LANE, TokenBucket

USER_AGENT = "respawn-operator/0.1"


class ApiError(Exception):
    """A non-2xx answer of the API server (``status`` 0: no answer at all).

    The client raises the subclass the status picks (:func:`api_error`, as kopf's
    ``_cogs/clients/errors.py`` does), so callers can ``except NotFoundError``;
    :func:`sort_api_error` reads the status, so a base ``ApiError`` sorts the same.
    """

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class NotFoundError(ApiError):
    """404."""


class ConflictError(ApiError):
    """409 on an update (our copy was stale), or a failed guard of our own status write."""


class AlreadyExistsError(ConflictError):
    """409 AlreadyExists on a create."""


class InvalidError(ApiError):
    """400/422: the object is rejected as built."""


class ForbiddenError(ApiError):
    """401/403."""


class TransientApiError(ApiError):
    """429, 5xx, no answer: retry later."""


def api_error(status: int, reason: str, message: str, retry_after: float | None = None) -> ApiError:
    """The ApiError subclass for an answer with ``status``."""
    cls: type[ApiError]
    if status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif status in (400, 422):
        cls = InvalidError
    elif status in (401, 403):
        cls = ForbiddenError
    else:
        cls = TransientApiError
    return cls(status, reason, message, retry_after)


class ErrorKind(enum.Enum):
    """What an API error means for the caller."""

    NOT_FOUND = "NotFound"
    """404: the object is gone; usually an answer, not a problem."""
    ALREADY_EXISTS = "AlreadyExists"
    """409 on create: done already; read it and carry on."""
    CONFLICT = "Conflict"
    """409 on update: our copy was stale; read again and retry."""
    INVALID = "Invalid"
    """400/422: the object we built is rejected; retrying will not help."""
    FORBIDDEN = "Forbidden"
    """401/403: RBAC or credentials; fix the ClusterRole, then it recovers by itself."""
    TRANSIENT = "Transient"
    """429, 5xx, timeouts, connection errors: retry with a delay."""


def sort_api_error(exc: BaseException) -> tuple[ErrorKind, float]:
    """Sort any error of an API call into an :class:`ErrorKind` and a retry delay in seconds.

    Every caller goes through here, so the policy for "what now?" lives in one place.
    """
    if isinstance(exc, ApiError):
        if exc.status == 404:
            return ErrorKind.NOT_FOUND, 0.0
        if exc.status == 409:
            kind = ErrorKind.ALREADY_EXISTS if exc.reason == "AlreadyExists" else ErrorKind.CONFLICT
            return kind, 0.0
        if exc.status in (400, 422):
            return ErrorKind.INVALID, 0.0
        if exc.status in (401, 403):
            return ErrorKind.FORBIDDEN, 30.0
        return ErrorKind.TRANSIENT, exc.retry_after if exc.retry_after else 2.0
    return ErrorKind.TRANSIENT, 2.0


def as_kopf_error(exc: BaseException, what: str) -> kopf.PermanentError | kopf.TemporaryError:
    """The kopf error a handler should raise for ``exc``, with a message saying what to do."""
    kind, delay = sort_api_error(exc)
    if kind is ErrorKind.INVALID:
        return kopf.PermanentError(f"{what}: the API server rejected it ({exc}); fix the PipelineRun spec")
    if kind is ErrorKind.FORBIDDEN:
        return kopf.TemporaryError(
            f"{what}: forbidden ({exc}); grant the operator's ClusterRole the verbs in docs/operator.md",
            delay=delay,
        )
    return kopf.TemporaryError(f"{what}: {exc}", delay=max(delay, 1.0))


@dataclasses.dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
PIPELINERUNS = Resource("respawn.dev", "v1alpha1", "pipelineruns")
CONFIGMAPS = Resource("", "v1", "configmaps")
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
"""kopf's peering object of a cluster-wide operator (read by the peering gate, with --peering)."""
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")
"""kopf's peering object in each served namespace (namespaced operator, with --peering)."""


class KubeClient:
    """Async REST client; one instance per operator process."""

    def __init__(
        self,
        host: str,
        *,
        headers: dict[str, str] | None = None,
        ssl_context: Any = None,
        credentials: Credentials | None = None,
        rate_limit: TokenBucket | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.rate_limit = rate_limit
        """Every request takes a token first (client-go's QPS and burst), in the lane
        `workqueue.LANE` says (an urgent round's requests first); None: no limit."""
        self._headers = dict(headers or {})
        self._ssl = ssl_context
        self._credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls, rate_limit: TokenBucket | None = None) -> KubeClient:
        """In-cluster credentials if present, else the current KUBECONFIG context (see credentials.py)."""
        creds = credentials.load()
        return cls(creds.host, ssl_context=creds.ssl_context(), credentials=creds, rate_limit=rate_limit)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send one request; raise :class:`ApiError` on any non-2xx answer or network failure.

        A 401 reloads the credentials once and tries again: a rotated token file or an
        expired exec-plugin token is the usual cause, and a fresh load fixes both.
        """
        if self.rate_limit is not None:
            await self.rate_limit.acquire(LANE.get())  # an urgent round's requests go first
        try:
            return await self._send(method, path, body, params, content_type)
        except ApiError as exc:
            if exc.status != 401 or self._credentials is None:
                raise
            self._credentials = self._credentials.reload()
            return await self._send(method, path, body, params, content_type)

    async def _send(
        self, method: str, path: str, body: Any, params: dict[str, Any] | None, content_type: str
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._headers}
        if self._credentials is not None:
            headers.update(self._credentials.headers())
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        url = self.host + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            async with self._session.request(method, url, data=data, headers=headers, ssl=self._ssl) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    reason, message = resp.reason or "", text
                    try:
                        st = json.loads(text)
                        reason, message = st.get("reason") or reason, st.get("message") or text
                    except ValueError:
                        pass
                    retry = resp.headers.get("Retry-After")
                    raise api_error(
                        resp.status, reason, message[:1000], float(retry) if retry and retry.isdigit() else None
                    )
                return json.loads(text) if text else {}
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientApiError(0, type(exc).__name__, str(exc)) from exc

    # Thin verbs ---------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or ``None`` if it does not exist."""
        try:
            return await self.request("GET", res.path(namespace, name))
        except ApiError as exc:
            if sort_api_error(exc)[0] is ErrorKind.NOT_FOUND:
                return None
            raise

    async def list(
        self, res: Resource, namespace: str | None = None, *, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or None
        result = await self.request("GET", res.path(namespace), params={"labelSelector": selector})
        return list(result.get("items") or [])

    async def create(self, res: Resource, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return await self.request("POST", res.path(namespace), body=body)

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        grace_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete; ``False`` if it was gone already."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            await self.request("DELETE", res.path(namespace, name), body=body)
            return True
        except ApiError as exc:
            if sort_api_error(exc)[0] is ErrorKind.NOT_FOUND:
                return False
            raise

"""API errors: one small hierarchy picked by status, one sorter for what to do next."""

from __future__ import annotations

from pathlib import Path

import pytest
from respawn_operator.kube import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ErrorKind,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    TransientApiError,
    api_error,
    sort_api_error,
)


@pytest.mark.parametrize(
    ("status", "reason", "cls", "kind"),
    [
        (404, "NotFound", NotFoundError, ErrorKind.NOT_FOUND),
        (409, "AlreadyExists", AlreadyExistsError, ErrorKind.ALREADY_EXISTS),
        (409, "Conflict", ConflictError, ErrorKind.CONFLICT),
        (422, "Invalid", InvalidError, ErrorKind.INVALID),
        (400, "BadRequest", InvalidError, ErrorKind.INVALID),
        (403, "Forbidden", ForbiddenError, ErrorKind.FORBIDDEN),
        (401, "Unauthorized", ForbiddenError, ErrorKind.FORBIDDEN),
        (429, "TooManyRequests", TransientApiError, ErrorKind.TRANSIENT),
        (503, "ServiceUnavailable", TransientApiError, ErrorKind.TRANSIENT),
    ],
)
def test_the_status_picks_the_class_and_the_sorter_agrees(status: int, reason: str, cls: type, kind: ErrorKind) -> None:
    err = api_error(status, reason, "m", retry_after=3.0 if status == 429 else None)
    assert type(err) is cls and isinstance(err, ApiError)
    assert sort_api_error(err)[0] is kind
    assert sort_api_error(ApiError(status, reason, "m"))[0] is kind  # a plain ApiError sorts the same


def test_retry_after_is_transient_with_its_delay() -> None:
    assert sort_api_error(api_error(429, "TooManyRequests", "slow down", retry_after=7.0)) == (ErrorKind.TRANSIENT, 7.0)
    assert isinstance(api_error(503, "ServiceUnavailable", "x"), TransientApiError)
    assert isinstance(api_error(409, "AlreadyExists", "x"), ConflictError)  # except ConflictError catches both


def test_the_client_takes_a_token_for_every_request_and_waits_when_the_bucket_is_empty(tmp_path: Path) -> None:
    """RESPAWN_API_QPS / RESPAWN_API_BURST: client-go's QPS and burst, against the real emulator."""
    import asyncio

    from respawn_local.apiserver import ApiServerThread
    from respawn_operator.config import OperatorConfig
    from respawn_operator.credentials import load
    from respawn_operator.kube import PODS, KubeClient
    from respawn_operator.workqueue import Ticket, TokenBucket

    config = OperatorConfig.from_env({"RESPAWN_API_QPS": "4", "RESPAWN_API_BURST": "2"})
    assert (config.api_qps, config.api_burst) == (4.0, 2)
    now = [0.0]
    waits: list[float] = []

    class Bucket(TokenBucket):
        def reserve(self, urgent: bool = False) -> Ticket:
            ticket = super().reserve(urgent)
            waits.append(ticket.wait)
            return ticket

    api = ApiServerThread()
    api.start()
    try:
        creds = load({"KUBECONFIG": api.write_kubeconfig(str(tmp_path / "kubeconfig"))})

        async def five() -> None:
            bucket = Bucket(qps=config.api_qps, burst=config.api_burst, clock=lambda: now[0])
            client = KubeClient(creds.host, ssl_context=creds.ssl_context(), credentials=creds, rate_limit=bucket)
            try:
                for _ in range(5):
                    await client.list(PODS, "default")
            finally:
                await client.close()

        asyncio.run(five())
    finally:
        api.stop()
    # The clock stands still: two from the burst, then each waits one more token's time (1/4 s).
    assert waits == [0.0, 0.0, 0.25, 0.5, 0.75]

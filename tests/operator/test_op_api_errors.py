"""API errors: one small hierarchy picked by status, one sorter for what to do next."""

from __future__ import annotations

import pytest
from respawn_operator.kube import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ErrorKind,
    ForbiddenError,
    InvalidError,
    NameTaken,
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


def test_retry_after_and_name_taken_are_transient_with_their_delay() -> None:
    assert sort_api_error(api_error(429, "TooManyRequests", "slow down", retry_after=7.0)) == (ErrorKind.TRANSIENT, 7.0)
    taken = NameTaken("job r-a1 belongs to another run")
    assert isinstance(taken, TransientApiError) and sort_api_error(taken)[0] is ErrorKind.TRANSIENT
    assert isinstance(api_error(409, "AlreadyExists", "x"), ConflictError)  # except ConflictError catches both

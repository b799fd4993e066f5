"""RFC 3339 timestamps as Kubernetes writes them."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)


def fmt(value: dt.datetime) -> str:
    """``2026-11-30T07:00:00Z`` (second precision, like the API server)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(value: str | None) -> dt.datetime | None:
    """Parse an RFC 3339 timestamp; ``None`` for missing or malformed values."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

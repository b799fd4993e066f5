"""Errors and small helpers every part of the emulator uses."""

from __future__ import annotations

import contextvars
import datetime
import random
from typing import Any

Obj = dict[str, Any]

# The request's ?fieldValidation= (Strict/Warn/Ignore), seen by schema validation.
_field_validation: contextvars.ContextVar[str | None] = contextvars.ContextVar("field_validation", default=None)


class ApiError(Exception):
    """An API failure carrying the `Status` object the server answers with."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        """The error as a Kubernetes `Status` object."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def now_rfc3339(offset: float = 0.0) -> str:
    """Current UTC time (plus `offset` seconds) the way Kubernetes prints it."""
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime.datetime:
    """Parse a Kubernetes timestamp (seconds or fractional precision)."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """Kubernetes' `duration.HumanDuration` (what `kubectl get` shows as AGE)."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what kube's generateName uses


def random_suffix(n: int = 5) -> str:
    """Random suffix in the alphabet kube uses for generated names."""
    return "".join(random.choice(_NAME_CHARS) for _ in range(n))

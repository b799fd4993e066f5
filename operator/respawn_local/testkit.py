"""Small helpers shared by the local demo and the test suites."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(AssertionError):
    """A condition did not come true before its deadline (an AssertionError for pytest)."""


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; raise WaitTimeout after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

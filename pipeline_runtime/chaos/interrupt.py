"""Interrupting one running attempt: the one place that decides when a signal goes out.

The chaos engine, `assert_resumable` and the fault suite's own kill loops all stop
their attempts through `interrupt`: after some seconds of a clean run's time, or once
a condition holds (the attempt paused at a storage operation and wrote its marker, or
its log shows N commits).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .store import ENV_MARKER, ENV_PAUSE_AT

POLL_SECONDS = 0.01
AFTER_SIGNAL_SECONDS = 60.0
"""How long an interrupted attempt may take to exit (a SIGTERM commits first)."""


class Process(Protocol):
    """What `subprocess.Popen` and the fork server's children both offer."""

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def pause_env(moment: str, n: int, marker: Path | str) -> dict[str, str]:
    """The environment that stops an attempt at its `n`th `moment` (artifact-before,
    commit-before, delete-before: see store.py) and makes it write `marker` there."""
    return {ENV_PAUSE_AT: f"{moment}:{n}", ENV_MARKER: str(marker)}


def interrupt(proc: Process, when: float | Callable[[], bool], sig: int, timeout: float) -> tuple[int, bool]:
    """Send `sig` to `proc` after `when` seconds, or as soon as `when()` is true, unless it
    ends first; then wait for it to exit. Returns (exit code, whether `sig` was sent).

    A process still running `timeout` seconds after the call, without the moment coming,
    is SIGKILLed and reported as (-SIGKILL, False): the caller's timeout, not its signal.
    """
    started = time.monotonic()
    try:
        if callable(when):
            while proc.poll() is None and not when():
                if time.monotonic() - started > timeout:
                    raise subprocess.TimeoutExpired("attempt", timeout)
                time.sleep(POLL_SECONDS)
        else:
            return proc.wait(min(when, timeout)), False  # it ended before the moment
    except subprocess.TimeoutExpired:
        if time.monotonic() - started > timeout:
            proc.kill()
            proc.wait()
            return -signal.SIGKILL, False
    if proc.poll() is not None:
        return proc.wait(0), False
    proc.send_signal(sig)
    try:
        return proc.wait(AFTER_SIGNAL_SECONDS), True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL, True


def finish(proc: Process, timeout: float) -> int:
    """Let an attempt run to its end; SIGKILL it after `timeout` seconds (-SIGKILL)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL


def signal_number(name: str) -> int:
    """KILL, TERM or INT as a signal number."""
    return int(getattr(signal, f"SIG{name}"))

"""SIGTERM handling: stop at a safe point, or exit 143 when the deadline passes.

Python runs signal handlers only between bytecodes of the main thread, so a step
stuck in a long C call (a video decode) would delay them. `signal.set_wakeup_fd`
makes the C-level handler write the signal number to a pipe at once; a watcher
thread reads it, raises the stop flag and starts the deadline clock, whatever
the main thread is doing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

DEFAULT_DEADLINE_SECONDS = 10.0
"""Time from SIGTERM to a forced exit 143 (GKE spot grants regular pods about 15 s)."""


class StopSignal:
    """Process-wide stop flag set by SIGTERM."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received_at: float | None = None
        self.deadline_seconds = DEFAULT_DEADLINE_SECONDS
        self.on_deadline: Callable[[], None] = lambda: os._exit(143)
        self.installed = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def remaining(self) -> float:
        """Seconds left before the forced exit (infinite when no stop was requested)."""
        if self.received_at is None:
            return float("inf")
        return max(0.0, self.received_at + self.deadline_seconds - time.monotonic())

    def install(self) -> None:
        """Install the SIGTERM handler; call from the main thread, as early as possible."""
        if self.installed:
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.signal(signal.SIGTERM, _ignore)  # the wakeup fd does the real work
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(r,), name="respawn-sigterm",
                         daemon=True).start()
        self.installed = True

    def trigger(self) -> None:
        """Act as if SIGTERM arrived now (also used by the watcher)."""
        if self.event.is_set():
            return
        self.received_at = time.monotonic()
        self.event.set()
        threading.Thread(target=self._enforce_deadline, name="respawn-deadline",
                         daemon=True).start()

    def _watch(self, fd: int) -> None:
        while True:
            data = os.read(fd, 64)
            if not data:
                return
            if signal.SIGTERM in data:
                self.trigger()

    def _enforce_deadline(self) -> None:
        time.sleep(self.deadline_seconds)
        self.on_deadline()


def _ignore(signum: int, frame: object) -> None:
    return None


STOP = StopSignal()
"""The one stop flag of this process."""

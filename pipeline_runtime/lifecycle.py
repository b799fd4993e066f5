"""SIGTERM and SIGINT handling: stop at a safe point, or exit 143 (130 for SIGINT,
Ctrl-C) when the deadline passes.

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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Process-wide stop flag set by SIGTERM or SIGINT."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received_at: float | None = None
        self.signum: int = signal.SIGTERM
        """The signal that asked to stop (SIGINT exits 130, SIGTERM 143)."""
        self.deadline_seconds = DEFAULT_DEADLINE_SECONDS
        self.on_deadline: Callable[[], None] = lambda: os._exit(self.exit_code)
        self.installed = False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def remaining(self) -> float:
        """Seconds left before the forced exit (infinite when no stop was requested)."""
        if self.received_at is None:
            return float("inf")
        return max(0.0, self.received_at + self.deadline_seconds - time.monotonic())

    def install(self) -> None:
        """Install the SIGTERM/SIGINT handlers; call from the main thread, as early as possible."""
        if self.installed:
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        for signum in STOP_SIGNALS:
            signal.signal(signum, _ignore)  # the wakeup fd does the real work
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(r,), name="respawn-sigterm", daemon=True).start()
        self.installed = True

    def hold(self) -> None:
        """The outcome is decided: signals from now on are ignored until the process exits.

        Interpreter shutdown puts the default action back for every signal that has a
        Python handler, so a SIGTERM arriving then killed the process (-15) although its
        result was committed. Shutdown leaves SIG_IGN alone (and blocking would not do:
        the mask is per thread, and our threads would still take the signal).
        """
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def trigger(self, signum: int = signal.SIGTERM) -> None:
        """Act as if `signum` arrived now (also used by the watcher)."""
        if self.event.is_set():
            return
        self.signum = signum
        self.received_at = time.monotonic()
        self.event.set()
        threading.Thread(target=self._enforce_deadline, name="respawn-deadline", daemon=True).start()

    def _watch(self, fd: int) -> None:
        while True:
            data = os.read(fd, 64)
            if not data:
                return
            for signum in STOP_SIGNALS:
                if signum in data:
                    self.trigger(signum)

    def _enforce_deadline(self) -> None:
        time.sleep(self.deadline_seconds)
        self.on_deadline()


def _ignore(signum: int, frame: object) -> None:
    return None


STOP = StopSignal()
"""The one stop flag of this process."""

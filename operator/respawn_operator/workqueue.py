"""A per-run work queue: serialized, coalescing, rate limited (sample-controller's queue).

* Serialized: one reconcile of a run at a time; a poke while it runs marks it dirty
  and it runs once more after, however many pokes came.
* Delayed: `add(key, delay)` keeps the earliest due time per run.
* Rate limited, in two ways, as client-go's default controller rate limiter is:
  a run whose reconcile fails waits `base * 2**(failures - 1)` seconds, up to `cap`
  (ItemExponentialFailureRateLimiter), until a round succeeds (`forget`); and every
  round takes a token from one bucket of `qps` tokens a second, `burst` deep
  (BucketRateLimiter), so a storm of events cannot turn into a storm of API calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Backoff(Generic[K]):
    """Per-item exponential backoff on failures."""

    base: float = 0.05
    """Seconds to wait after a first failure."""
    cap: float = 300.0
    """The longest wait, however many failures."""
    failures: dict[K, int] = field(default_factory=dict)

    def failed(self, key: K) -> float:
        """Count a failure of `key`; the seconds to wait before its next try."""
        n = self.failures.get(key, 0) + 1
        self.failures[key] = n
        return float(min(self.cap, self.base * 2 ** min(n - 1, 60)))

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts from `base` again."""
        self.failures.pop(key, None)

    def count(self, key: K) -> int:
        return self.failures.get(key, 0)


@dataclass
class TokenBucket:
    """`qps` tokens a second, at most `burst` saved up; `take` says how long to wait for one."""

    qps: float = 20.0
    """Rounds a second, sustained."""
    burst: int = 100
    """Rounds at once after a quiet spell."""
    clock: Callable[[], float] = time.monotonic
    _tokens: float | None = None
    """None until the first take (the bucket starts full); negative: tokens owed."""
    _at: float = 0.0

    def take(self) -> float:
        """Take a token; the seconds until it is really there (0: now)."""
        now = self.clock()
        tokens = float(self.burst) if self._tokens is None else self._tokens
        tokens = min(float(self.burst), tokens + (now - self._at) * self.qps) - 1.0
        self._tokens, self._at = tokens, now
        return 0.0 if tokens >= 0 else -tokens / self.qps


class Retry(Exception):
    """Raised by a handler for an expected failure (an API error): retried after the
    backoff, or `after` seconds if that is longer (a Retry-After); logged without a traceback."""

    def __init__(self, message: str, after: float = 0.0) -> None:
        super().__init__(message)
        self.after = after


class WorkQueue(Generic[K]):
    """Runs `handler(key)` for keys added; see the module docstring.

    The handler returns the seconds until the key wants another round (a requeue
    after, e.g. to look at a pod again), or None. An exception is a failure: the
    key is retried after its backoff. `on_failure(key, exc, failures, delay)` reports
    it (log the traceback the first time, one line after that).
    """

    def __init__(
        self,
        handler: Callable[[K], Awaitable[float | None]],
        on_failure: Callable[[K, BaseException, int, float], None],
        backoff: Backoff[K] | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.handler = handler
        self.on_failure = on_failure
        self.backoff: Backoff[K] = backoff or Backoff()
        self.bucket = bucket or TokenBucket()
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, key: K, delay: float = 0.0) -> None:
        """Handle `key` soon (after `delay` seconds); many adds collapse into one round."""
        loop = asyncio.get_running_loop()
        if delay > 0:
            due = loop.time() + delay
            old = self._timers.get(key)
            if old is not None and old[0] <= due:
                return
            if old is not None:
                old[1].cancel()
            self._timers[key] = (due, loop.call_at(due, self._fire, key))
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        self._tasks[key] = loop.create_task(self._worker(key))

    def busy(self, key: K) -> bool:
        return key in self._tasks or key in self._timers

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _worker(self, key: K) -> None:
        try:
            while True:
                self._dirty.discard(key)
                wait = self.bucket.take()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    again = await self.handler(key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failing key must not stop the others
                    delay = max(self.backoff.failed(key), exc.after if isinstance(exc, Retry) else 0.0)
                    self.on_failure(key, exc, self.backoff.count(key), delay)
                    self.add(key, delay=delay)
                    # As client-go's queue: an event that came during the round still gets
                    # a look now (the run may have been fixed); the token bucket bounds it.
                    if key not in self._dirty:
                        break
                    continue
                self.backoff.forget(key)
                if again is not None:
                    self.add(key, delay=again)
                if key not in self._dirty:
                    break
        finally:
            self._tasks.pop(key, None)

    async def shutdown(self) -> None:
        """Cancel pending and running rounds."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

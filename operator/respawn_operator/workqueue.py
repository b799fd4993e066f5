"""A per-run work queue: serialized, coalescing, rate limited (sample-controller's queue).

* Serialized: one reconcile of a run at a time; a poke while it runs marks it dirty
  and it runs once more after, however many pokes came.
* Delayed: `add(key, delay)` keeps the earliest due time per run.
* Rate limited, in two ways, as client-go's default controller rate limiter is:
  a run whose reconcile fails waits `base * 2**(failures - 1)` seconds, up to `cap`
  (ItemExponentialFailureRateLimiter), until a round succeeds (`forget`); and every
  round takes a token from one bucket of `qps` tokens a second, `burst` deep
  (BucketRateLimiter), so a storm of events cannot turn into a storm of API calls.
* Two lanes. The queue asks `urgent(key)` (the reconciler answers from its watch caches:
  the run's current pod was preempted, evicted or lost its node) before a round takes
  its token, and on every poke of a run that is waiting for its token or in a round. An
  urgent round takes its token ahead of the normal rounds waiting, and runs with its
  `Lane` (the `LANE` context variable) urgent, so each API request it makes takes the
  client's token (kube.py) ahead of normal requests too. A round that turns urgent while
  it runs (the poke came meanwhile, or the round itself saw the loss) is promoted: its
  waiting request and the rest go urgent, since the run's next round waits for it (when
  a poke promoted it, that next round is urgent whatever the caches say then).

`TokenBucket` is one bucket for both lanes, so `qps` and `burst` stay the ceiling for all
(client-go's semantics). A take *reserves* the next token: the bucket's arithmetic gives
it the same time a first-come-first-served bucket would. Waiting reservations are kept in
the order of their times; an urgent one then takes the time of the first of the normal
ones just ahead of it that may still be overtaken, and each of those moves one place (one
token) later. Urgent ones keep their order among themselves,
and so do normal ones. No starvation: a normal reservation is overtaken at most
`patience * qps` times (it waits at most `patience` seconds longer than it would have
without the urgent lane); past that, urgent ones queue behind it. The set of times handed
out is exactly a plain bucket's, so the ceiling holds whatever the lanes do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("respawn.operator")


@dataclass(eq=False)
class Lane:
    """The lane of one round: its requests take the client's tokens in it."""

    urgent: bool = False
    _waiting: tuple[TokenBucket, Ticket] | None = None
    """The token a request of the round waits for now."""

    def promote(self) -> None:
        """The round turned urgent: its waiting request and all after it go urgent."""
        self.urgent = True
        if self._waiting is not None:
            bucket, ticket = self._waiting
            bucket.promote(ticket)


LANE: ContextVar[Lane | None] = ContextVar("respawn_lane", default=None)
"""The running round's lane (the work queue sets it per round); None: outside a round, normal."""


def hurry() -> None:
    """Promote the running round (the reconciler saw an attempt lost that no pod showed)."""
    lane = LANE.get()
    if lane is not None:
        lane.promote()


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


@dataclass(eq=False)
class Ticket:
    """A token reserved from a `TokenBucket`, there at `at` on the bucket's clock."""

    urgent: bool
    at: float
    """When the token is there; later each time an urgent reservation overtakes this one."""
    start: float
    """When it was reserved."""
    overtaken: int = 0
    done: bool = False
    """Its waiter has the token (or gave up)."""
    _moved: asyncio.Future[None] | None = None
    """Set while its waiter sleeps; resolved when it moves earlier (a promotion)."""

    @property
    def wait(self) -> float:
        """Seconds from the reservation to the token."""
        return max(0.0, self.at - self.start)


@dataclass
class TokenBucket:
    """`qps` tokens a second, at most `burst` saved up, two lanes (see the module docstring)."""

    qps: float = 20.0
    """Tokens a second, sustained."""
    burst: int = 100
    """Tokens at once after a quiet spell."""
    clock: Callable[[], float] = time.monotonic
    patience: float = 1.0
    """The most seconds urgent reservations may push a normal one back, in all."""
    _tokens: float | None = None
    """None until the first take (the bucket starts full); negative: tokens owed."""
    _at: float = 0.0
    _waiting: deque[Ticket] = field(default_factory=deque)
    """Reservations not yet due nor done, in the order of their `at`."""

    @property
    def max_overtakes(self) -> int:
        """How many urgent reservations may overtake one normal reservation."""
        return max(1, int(self.patience * self.qps))

    def reserve(self, urgent: bool = False) -> Ticket:
        """Reserve the next token (of `urgent`'s lane); `wait(ticket)` waits for it."""
        now = self.clock()
        tokens = float(self.burst) if self._tokens is None else self._tokens
        tokens = min(float(self.burst), tokens + (now - self._at) * self.qps) - 1.0
        self._tokens, self._at = tokens, now
        ticket = Ticket(urgent, now + (0.0 if tokens >= 0 else -tokens / self.qps), now)
        while self._waiting and (self._waiting[0].done or self._waiting[0].at <= now):
            self._waiting.popleft()
        if ticket.at > now:
            self._waiting.append(ticket)
            if urgent:
                self._move_up(len(self._waiting) - 1, now)
        return ticket

    def promote(self, ticket: Ticket) -> None:
        """Move a waiting normal reservation into the urgent lane (its run turned urgent)."""
        if ticket.urgent:
            return
        ticket.urgent = True
        if not ticket.done:
            try:
                index = self._waiting.index(ticket)
            except ValueError:
                return  # due already
            self._move_up(index, self.clock())

    def _move_up(self, index: int, now: float) -> None:
        """The urgent reservation at `index` overtakes the normal ones just ahead of it that
        may still be overtaken; each of those moves one place (one token) later."""
        w = self._waiting
        limit = self.max_overtakes
        first = index
        while first > 0:
            ahead = w[first - 1]
            if ahead.urgent or ahead.done or ahead.at <= now or ahead.overtaken >= limit:
                break
            first -= 1
        if first == index:
            return
        ticket = w[index]
        times = [w[i].at for i in range(first, index + 1)]
        for i in range(first, index):
            w[i].at = times[i - first + 1]
            w[i].overtaken += 1
        ticket.at = times[0]
        del w[index]
        w.insert(first, ticket)
        if ticket._moved is not None:
            _resolve(ticket._moved)  # its waiter sleeps too long now

    async def wait(self, ticket: Ticket) -> None:
        """Sleep until `ticket`'s token is there, following it if it moves."""
        loop = asyncio.get_running_loop()
        origin = loop.time() - (self.clock() - ticket.start)
        try:
            while (left := origin + ticket.at - ticket.start - loop.time()) > 0:
                moved: asyncio.Future[None] = loop.create_future()
                ticket._moved = moved
                timer = loop.call_later(left, _resolve, moved)
                try:
                    await moved
                finally:
                    timer.cancel()
        except BaseException:
            if ticket in self._waiting:  # given up (cancelled): its token is lost, never reused
                self._waiting.remove(ticket)
            raise
        finally:
            ticket._moved = None
            ticket.done = True

    async def acquire(self, lane: Lane | None = None) -> None:
        """Take a token in `lane` (None: normal), waiting for it if need be; a promotion of
        the lane meanwhile moves the wait up."""
        ticket = self.reserve(lane is not None and lane.urgent)
        if ticket.at <= ticket.start:
            ticket.done = True
            return
        if lane is not None:
            lane._waiting = (self, ticket)
        try:
            await self.wait(ticket)
        finally:
            if lane is not None:
                lane._waiting = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
    it (log the traceback the first time, one line after that). `urgent(key)` says
    whether the key's next round goes in the urgent lane.
    """

    def __init__(
        self,
        handler: Callable[[K], Awaitable[float | None]],
        on_failure: Callable[[K, BaseException, int, float], None],
        backoff: Backoff[K] | None = None,
        bucket: TokenBucket | None = None,
        urgent: Callable[[K], bool] | None = None,
    ) -> None:
        self.handler = handler
        self.on_failure = on_failure
        self.backoff: Backoff[K] = backoff or Backoff()
        self.bucket = bucket or TokenBucket()
        self.urgent: Callable[[K], bool] = urgent or (lambda key: False)
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._lanes: dict[K, Lane] = {}
        """The lane of each key waiting for its round's token or in a round."""
        self._hurry: set[K] = set()
        """Keys poked while urgent during a round: their next round is urgent too."""

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
            lane = self._lanes.get(key)
            if lane is not None and not lane.urgent and self._urgent(key):
                lane.promote()  # e.g. its pod was preempted while it waited, or in its round
                self._hurry.add(key)
            return
        self._tasks[key] = loop.create_task(self._worker(key))

    def _urgent(self, key: K) -> bool:
        """`urgent(key)`, or normal if it fails: it runs outside the round's error handling (in
        `add`, and before the round takes its token), where an exception would end the
        key's worker with no retry, and the run would wait for its next event."""
        try:
            return self.urgent(key)
        except Exception:
            log.exception("work queue: urgent(%r) failed; the round runs in the normal lane", key)
            return False

    def busy(self, key: K) -> bool:
        return key in self._tasks or key in self._timers

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _worker(self, key: K) -> None:
        try:
            while True:
                lane = Lane(urgent=key in self._hurry or self._urgent(key))
                self._hurry.discard(key)
                self._lanes[key] = lane
                await self.bucket.acquire(lane)
                self._dirty.discard(key)  # the round sees what a poke during the wait said
                # Set per round: the task's context came from whoever first added the key.
                LANE.set(lane)
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
            self._lanes.pop(key, None)
            self._hurry.discard(key)

    async def shutdown(self) -> None:
        """Cancel pending and running rounds."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

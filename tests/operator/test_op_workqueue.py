"""The operator's work queue: serialized, coalescing, backing off, rate limited (workqueue.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from respawn_operator.workqueue import Backoff, Retry, TokenBucket, WorkQueue


def test_backoff_doubles_per_failure_up_to_its_cap_and_forgets_on_success() -> None:
    b: Backoff[str] = Backoff(base=0.05, cap=1.0)
    assert [b.failed("r") for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.failed("other") == 0.05  # per run
    b.forget("r")
    assert b.failed("r") == 0.05
    assert Backoff[str](base=1.0, cap=1e9).failed("x") == 1.0 and Backoff[str](base=1.0).count("x") == 0


def test_the_token_bucket_lets_a_burst_through_then_paces() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)  # the fourth waits one token's time
    now[0] += 1.0  # a quiet second refills, but never past the burst
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0


def test_a_failing_key_backs_off_logs_and_recovers_while_others_run() -> None:
    async def scenario() -> tuple[list[Any], list[str], list[str]]:
        calls: list[str] = []
        failures: list[Any] = []

        async def handler(key: str) -> float | None:
            calls.append(key)
            if key == "bad" and calls.count("bad") <= 4:
                raise (Retry("503 from the API", after=0.0) if calls.count("bad") == 2 else RuntimeError("a bug"))
            return None

        queue: WorkQueue[str] = WorkQueue(
            handler,
            lambda k, e, n, d: failures.append((k, type(e).__name__, n, d)),
            Backoff(base=0.01, cap=0.05),
            TokenBucket(qps=1000.0, burst=1000),
        )
        queue.add("bad")
        queue.add("good")
        deadline = asyncio.get_running_loop().time() + 10
        while calls.count("bad") < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        while queue.busy("bad") and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        seen = list(queue.backoff.failures)
        await queue.shutdown()
        return failures, calls, seen

    failures, calls, seen = asyncio.run(scenario())
    assert failures == [
        ("bad", "RuntimeError", 1, 0.01),
        ("bad", "Retry", 2, 0.02),
        ("bad", "RuntimeError", 3, 0.04),
        ("bad", "RuntimeError", 4, 0.05),
    ]
    assert calls.count("good") == 1 and calls.count("bad") == 5
    assert seen == []  # the fifth round succeeded: the count is forgotten


def test_adds_during_a_round_coalesce_into_one_more_round() -> None:
    async def scenario() -> list[str]:
        calls: list[str] = []
        release = asyncio.Event()

        async def handler(key: str) -> float | None:
            calls.append(key)
            if len(calls) == 1:
                await release.wait()
            return None

        queue: WorkQueue[str] = WorkQueue(handler, lambda *a: None)
        queue.add("r")
        await asyncio.sleep(0)
        for _ in range(5):
            queue.add("r")  # while the first round runs
        release.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while queue.busy("r") and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await queue.shutdown()
        return calls

    assert asyncio.run(scenario()) == ["r", "r"]

"""The operator's work queue: serialized, coalescing, backing off, rate limited, two lanes (workqueue.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from respawn_operator.config import OperatorConfig
from respawn_operator.kube import KubeClient
from respawn_operator.reconciler import Reconciler
from respawn_operator.workqueue import LANE, Backoff, Lane, Retry, Ticket, TokenBucket, WorkQueue, hurry


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
    assert [bucket.reserve().wait for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve().wait == pytest.approx(0.1)  # the fourth waits one token's time
    now[0] += 1.0  # a quiet second refills, but never past the burst
    assert [bucket.reserve().wait for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve().wait > 0


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


def test_an_urgency_test_that_raises_still_runs_the_round_in_the_normal_lane(caplog: pytest.LogCaptureFixture) -> None:
    """`urgent(key)` runs before the round's own error handling: if it raised there, the key's
    worker would end with no retry and the run would wait for its next event."""

    async def scenario() -> list[str]:
        calls: list[str] = []

        async def handler(key: str) -> float | None:
            calls.append(key)
            return None

        def urgent(key: str) -> bool:
            raise KeyError("uid")

        queue: WorkQueue[str] = WorkQueue(handler, lambda *a: None, urgent=urgent)
        queue.add("r")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not calls and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await queue.shutdown()
        return calls

    assert asyncio.run(scenario()) == ["r"]
    assert "urgent('r') failed" in caplog.text


# The two lanes -------------------------------------------------------------------------------

Op = tuple[float, str, int]
"""(seconds the clock moves first, "normal" | "urgent" | "promote", which waiting ticket to promote)."""


@given(
    qps=st.sampled_from([1.0, 10.0, 200.0]),
    burst=st.integers(1, 12),
    overtakes=st.sampled_from([1, 2, 3, 5, 10_000]),
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.3, 2.0]),
            st.sampled_from(["normal", "normal", "urgent", "promote"]),
            st.integers(0, 1000),
        ),
        max_size=80,
    ),
)
def test_the_urgent_lane_goes_first_starves_no_one_and_keeps_the_ceiling(
    qps: float, burst: int, overtakes: int, ops: list[Op]
) -> None:
    """Reservations, promotions and a moving clock, generated; no waiter sleeps: a ticket
    gets its token at its final `at`. A plain bucket (one lane) takes the same reservations."""
    now = [0.0]
    bucket = TokenBucket(qps=qps, burst=burst, clock=lambda: now[0], patience=overtakes / qps)
    assert bucket.max_overtakes == overtakes
    plain = TokenBucket(qps=qps, burst=burst, clock=lambda: now[0])
    tickets: list[Ticket] = []
    first_at: dict[int, float] = {}
    promoted: set[int] = set()
    plain_times: list[float] = []
    for dt, kind, pick in ops:
        now[0] += dt
        if kind == "promote":
            waiting = [t for t in tickets if not t.urgent and t.at > now[0]]
            if waiting:
                chosen = waiting[pick % len(waiting)]
                before = chosen.at
                bucket.promote(chosen)
                promoted.add(id(chosen))
                assert chosen.urgent and chosen.at <= before  # a promotion only ever moves it earlier
            continue
        waiting_normal = [t for t in tickets if not t.urgent and t.at > now[0]]
        ticket = bucket.reserve(urgent=kind == "urgent")
        plain_ticket = plain.reserve()
        plain_times.append(plain_ticket.at)
        assert ticket.start == now[0] and ticket.at >= now[0]
        if kind == "normal":
            assert ticket.at == pytest.approx(plain_ticket.at)  # a normal one is placed as the plain bucket would
        elif all(t.overtaken < overtakes for t in waiting_normal):
            # Priority: ahead of every normal reservation still waiting (none has run out of patience).
            assert all(ticket.at < t.at for t in waiting_normal)
        tickets.append(ticket)
        first_at[id(ticket)] = ticket.at

    # The ceiling: the tokens handed out are exactly the plain bucket's, so no window of
    # time holds more than `burst + qps * its length` of them.
    times = sorted(t.at for t in tickets)
    assert times == pytest.approx(sorted(plain_times))
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + qps * (times[j] - times[i]) + 1e-6
    # Each lane keeps its order (promoted tickets joined the urgent lane late: left out).
    for lane in (True, False):
        kept = [t.at for t in tickets if t.urgent == lane and id(t) not in promoted]
        assert kept == sorted(kept)
    # No starvation: a normal reservation is overtaken at most `overtakes` times, each
    # costing it one token's time.
    for t in tickets:
        if not t.urgent:
            assert t.overtaken <= overtakes
            assert t.at <= first_at[id(t)] + t.overtaken / qps + 1e-6


def test_the_tokens_handed_out_are_a_plain_buckets_whatever_the_lanes() -> None:
    now = [0.0]
    lanes = TokenBucket(qps=10.0, burst=2, clock=lambda: now[0])
    plain = TokenBucket(qps=10.0, burst=2, clock=lambda: now[0])
    got, want = [], []
    for i in range(30):
        now[0] += 0.03 * (i % 3)
        got.append(lanes.reserve(urgent=i % 4 == 0))
        want.append(plain.reserve().at)
    assert sorted(t.at for t in got) == pytest.approx(sorted(want))
    # The urgent ones (every fourth) came out ahead of normal ones reserved before them.
    assert got[8].at < got[7].at and got[4].at < got[3].at


def test_a_normal_reservation_overtaken_to_its_limit_keeps_its_place() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10.0, burst=1, clock=lambda: now[0], patience=0.2)  # two overtakes
    bucket.reserve()  # the burst
    normal = bucket.reserve()
    assert normal.at == pytest.approx(0.1)
    urgent = [bucket.reserve(urgent=True) for _ in range(4)]
    assert [u.at for u in urgent[:2]] == pytest.approx([0.1, 0.2])  # the first two go ahead
    assert normal.overtaken == 2 and normal.at == pytest.approx(0.3)
    assert [u.at for u in urgent[2:]] == pytest.approx([0.4, 0.5])  # then it is next, whatever comes


def run_queue(
    keys: list[str], urgent: set[str], promote: str | None = None
) -> tuple[list[str], dict[str, bool], list[bool]]:
    """Add `keys` (normal unless in `urgent`) to a queue whose bucket holds one token and
    then gives one every 10 ms on a frozen clock (waits are the bucket's arithmetic); with
    `promote`, that key turns urgent once it waits and is poked. The rounds' order, the
    lane each round had, and whether each request-like take in a round was urgent."""

    async def scenario() -> tuple[list[str], dict[str, bool], list[bool]]:
        order: list[str] = []
        seen: dict[str, bool] = {}
        client_bucket = TokenBucket(qps=1000.0, burst=1000, clock=lambda: 0.0)
        lanes: list[bool] = []

        async def handler(key: str) -> float | None:
            order.append(key)
            lane = LANE.get()
            assert lane is not None
            seen[key] = lane.urgent
            lanes.append(client_bucket.reserve(lane.urgent).urgent)  # as KubeClient.request does
            return None

        queue: WorkQueue[str] = WorkQueue(
            handler,
            lambda *a: None,
            bucket=TokenBucket(qps=100.0, burst=1, clock=lambda: 0.0),
            urgent=lambda key: key in urgent,
        )
        for key in keys:
            queue.add(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        if promote is not None:
            while (promote not in queue._lanes or queue._lanes[promote]._waiting is None) and loop.time() < deadline:
                await asyncio.sleep(0)
            urgent.add(promote)
            queue.add(promote)  # the poke of its pod's preemption
        while any(queue.busy(k) for k in keys) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await queue.shutdown()
        return order, seen, lanes

    return asyncio.run(scenario())


def test_an_urgent_round_runs_before_the_normal_rounds_waiting_and_its_requests_are_urgent() -> None:
    keys = [f"n{i}" for i in range(8)] + ["u"]
    order, seen, lanes = run_queue(keys, {"u"})
    assert order == ["n0", "u"] + [f"n{i}" for i in range(1, 8)]  # n0 had the one token saved up
    assert seen == {k: k == "u" for k in keys}
    assert lanes == [k == "u" for k in order]


def test_a_waiting_round_whose_pod_is_preempted_is_promoted() -> None:
    keys = [f"n{i}" for i in range(8)]
    order, seen, _ = run_queue(keys, set(), promote="n7")
    assert order == ["n0", "n7"] + [f"n{i}" for i in range(1, 7)]
    assert seen["n7"] and not seen["n1"]


def test_a_round_promoted_while_its_request_waits_moves_that_request_up() -> None:
    """A poke of a preempted pod's run comes while its round waits for the client's token
    (behind other rounds' requests): that request goes next, and so do the round's later ones."""

    async def scenario() -> tuple[list[str], bool]:
        # The loop's clock: the round's second request is reserved a token's time later.
        bucket = TokenBucket(qps=100.0, burst=1, clock=asyncio.get_running_loop().time)
        order: list[str] = []
        lane = Lane()

        async def request(name: str, lane: Lane | None) -> None:
            await bucket.acquire(lane)
            order.append(name)

        async def round_() -> bool:
            LANE.set(lane)
            await request("round-1", LANE.get())
            hurry()  # already urgent: no change
            await request("round-2", LANE.get())
            return LANE.get() is lane

        others = [asyncio.create_task(request(f"other-{i}", None)) for i in range(6)]
        await asyncio.sleep(0)  # the others reserve first
        mine = asyncio.create_task(round_())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while lane._waiting is None and loop.time() < deadline:
            await asyncio.sleep(0)
        lane.promote()
        same = await mine
        await asyncio.gather(*others)
        return order, same

    order, same = asyncio.run(scenario())
    assert order[:3] == ["other-0", "round-1", "round-2"] and same
    assert order[3:] == [f"other-{i}" for i in range(1, 6)]


PREEMPTED_POD = {
    "metadata": {"name": "r-a1-x"},
    "spec": {"nodeName": "node-1"},
    "status": {
        "phase": "Failed",
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
        "containerStatuses": [{"name": "pipeline", "state": {"terminated": {"exitCode": 143}}}],
    },
}


def test_a_round_is_urgent_when_its_open_attempts_pod_was_lost_to_the_infrastructure() -> None:
    """The reconciler's answer to the queue, from its caches only (no request)."""
    rec = Reconciler(KubeClient("http://127.0.0.1:9"), OperatorConfig.from_env({}))
    key = ("ns", "r")
    attempt = {"attempt": 1, "job": "r-a1"}
    rec.runs.bodies[key] = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u1"},
        "status": {"attempt": 1, "attempts": [attempt]},
    }
    assert not rec.urgent(key)  # no pod seen yet
    running = {**PREEMPTED_POD, "status": {"phase": "Running"}}
    rec.pods.store("ns", "u1", "1", running, False)
    assert not rec.urgent(key)
    rec.nodes.put("node-1", None)  # its node vanished
    assert rec.urgent(key)
    rec.nodes.put("node-1", {"metadata": {"name": "node-1"}})
    assert not rec.urgent(key)
    rec.pods.store("ns", "u1", "1", PREEMPTED_POD, False)
    assert rec.urgent(key)
    succeeded = {**PREEMPTED_POD, "status": {"phase": "Succeeded", "containerStatuses": []}}
    rec.pods.store("ns", "u1", "1", succeeded, False)
    assert not rec.urgent(key)  # ends the attempt, but nothing to hurry
    rec.pods.store("ns", "u1", "1", PREEMPTED_POD, False)
    attempt["outcome"] = "Preempted"
    assert not rec.urgent(key)  # that attempt is over; the next one has no pod yet
    assert not rec.urgent(("ns", "unknown"))

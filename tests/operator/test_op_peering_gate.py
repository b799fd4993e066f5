"""The peering gate: kopf's pause rule for the reconciler's own loops, without a server."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from respawn_operator.config import OperatorConfig
from respawn_operator.peering import CLUSTER, PeeringGate, Verdict, verdict
from respawn_operator.reconciler import Reconciler

from tests.operator.test_op_run_cache import KEY, FakeApi

NOW = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)
ME = "respawn-operator-low"


def peer(priority: int, seen_ago: float = 1.0, lifetime: int = 8) -> dict[str, Any]:
    """A peer's entry as kopf writes it (``lastseen`` in ISO 8601 UTC, with microseconds)."""
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - dt.timedelta(seconds=seen_ago)).isoformat()}


def test_a_live_peer_of_higher_priority_pauses() -> None:
    status = {ME: peer(10), "high": peer(20)}
    assert verdict(status, ME, 10, NOW) == Verdict(False, "high", 20)


def test_a_live_peer_of_the_same_priority_pauses() -> None:
    assert verdict({ME: peer(10), "twin": peer(10)}, ME, 10, NOW) == Verdict(False, "twin", 10)


def test_a_dead_peer_of_higher_priority_does_not_pause() -> None:
    # lastseen + lifetime in the past (kopf: deadline <= now is dead), also exactly now.
    assert verdict({ME: peer(10), "high": peer(20, seen_ago=9)}, ME, 10, NOW).active
    assert verdict({"high": peer(20, seen_ago=8)}, ME, 10, NOW).active
    assert not verdict({"high": peer(20, seen_ago=7.9)}, ME, 10, NOW).active


def test_own_entry_and_lower_peers_are_ignored() -> None:
    assert verdict({ME: peer(10)}, ME, 5, NOW).active  # ourselves, whatever priority it says
    assert verdict({ME: peer(10), "low": peer(3)}, ME, 10, NOW).active


def test_no_peers_means_active() -> None:
    assert verdict({}, ME, 10, NOW).active
    assert verdict(None, ME, 10, NOW).active


def test_the_highest_live_blocker_is_named_and_z_suffix_parses() -> None:
    status = {
        "a": peer(20),
        "b": peer(30),
        "dead": peer(99, seen_ago=60),
        "c": {"priority": 25, "lifetime": 8, "lastseen": "2026-11-30T11:59:59Z"},
    }
    assert verdict(status, ME, 10, NOW) == Verdict(False, "b", 30)


def test_gate_without_peering_is_always_active_and_reads_nothing() -> None:
    gate = PeeringGate()
    assert not gate.enabled and gate.active("ns") and gate.objects() == []


def test_gate_with_peering_starts_paused_and_logs_each_transition_once(caplog: pytest.LogCaptureFixture) -> None:
    gate = PeeringGate(identity=ME, priority=10, name="respawn", clusterwide=True, lifetime=8)
    assert gate.interval == 2.0 and gate.objects() == [CLUSTER]
    assert not gate.active("ns")  # not read yet: paused, as kopf starts
    caplog.set_level(logging.INFO, logger="respawn.operator")
    gate.update(CLUSTER, {ME: peer(10)}, NOW)
    gate.update(CLUSTER, {ME: peer(10)}, NOW)
    assert gate.active("ns") and gate.active("other")
    gate.update(CLUSTER, {ME: peer(10), "high": peer(20)}, NOW)
    gate.update(CLUSTER, {ME: peer(10), "high": peer(20)}, NOW)
    assert not gate.active("ns")
    gate.update(CLUSTER, {ME: peer(10), "high": peer(20, seen_ago=30)}, NOW)
    assert gate.active("ns")
    gate.update(CLUSTER, None, NOW, missing=True)  # kopf's mandatory peering pauses without the object
    assert not gate.active("ns")
    assert [r.getMessage() for r in caplog.records] == [
        "peering: active",
        "peering: paused, high has priority 20",
        "peering: active",
        "peering: paused, peering object respawn not found",
    ]


def test_namespaced_gate_keeps_one_verdict_per_namespace() -> None:
    gate = PeeringGate(
        identity=ME, priority=10, name="respawn", clusterwide=False, namespaces=("team-a", "team-*"), lifetime=60
    )
    assert gate.interval == 15.0 and gate.objects() == ["team-a"]
    assert not gate.active("team-b")  # asked about: read from now on
    assert gate.objects() == ["team-a", "team-b"]
    gate.update("team-a", {"high": peer(20)}, NOW)
    gate.update("team-b", {}, NOW)
    assert not gate.active("team-a") and gate.active("team-b")


def test_a_paused_reconciler_makes_no_api_call_and_looks_again_later() -> None:
    api = FakeApi()
    gate = PeeringGate(identity=ME, priority=10, name="respawn", lifetime=8)
    rec = Reconciler(api, OperatorConfig(default_checkpoint_uri="file:///ckpt"), gate)  # type: ignore[arg-type]
    assert asyncio.run(rec.reconcile(*KEY)) == gate.interval  # never read: paused
    gate.update(CLUSTER, {"high": peer(20)}, NOW)
    assert asyncio.run(rec.reconcile(*KEY)) == gate.interval
    assert api.calls == [] and KEY in rec.runs.known
    gate.update(CLUSTER, {"high": peer(20, seen_ago=30)}, NOW)
    asyncio.run(rec.reconcile(*KEY))
    assert ("create", "jobs") in api.calls and api.run["status"]["attempt"] == 1

"""Random disruptions through the operator: pods preempted (kubelet shutdown or scheduler
preemption), evicted, deleted by a user, or their node lost (the process killed, or kept
running: split brain), at seeded random moments, 1-3 times a run. Every run must finish
exactly once, with the clean output, one Job per attempt, no committed step run again.

Size: $RESPAWN_FAULT_OPERATOR_RUNS runs (default 6).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from respawn_local.podsim import SimNode
from respawn_local.testkit import wait_for

from tests.faults.operator_runs import settle_and_judge
from tests.faults.results import Results, runs_from_env
from tests.faults.test_operator_faults import SEED
from tests.operator.harness import NS, Cluster

pytestmark = pytest.mark.slow  # random disruptions through the operator (size: RESPAWN_FAULT_OPERATOR_RUNS)

RUNS = runs_from_env("RESPAWN_FAULT_OPERATOR_RUNS", 6)
SPOT = "cloud.google.com/gke-spot"
KINDS = ["TerminationByKubelet", "PreemptionByScheduler", "evict", "delete", "lose-node", "lose-node-keep-running"]
_NODES = threading.Lock()  # one node loss at a time: the simulator has three nodes


def live_pod(cluster: Cluster, name: str) -> dict[str, Any] | None:
    uid = cluster.run(name)["metadata"]["uid"]
    attempt = cluster.status(name).get("attempt")
    for pod in cluster.api.list("pods", NS, label_selector=f"respawn.dev/run-uid={uid},respawn.dev/attempt={attempt}"):
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            return pod
    return None


def disrupt(cluster: Cluster, rng: random.Random, name: str, times: int) -> list[str]:
    """Disrupt the run's running pod `times` times; returns what was done."""
    done: list[str] = []
    for _ in range(times):
        try:
            pod = wait_for(
                lambda: live_pod(cluster, name) or cluster.status(name).get("phase") in ("Succeeded", "Failed"),
                60,
                f"{name}: a running pod",
            )
        except AssertionError:
            break
        if not isinstance(pod, dict):
            break  # finished before this disruption: fine, the moment is random
        time.sleep(rng.uniform(0.0, 1.2))  # the disruption moment is the input under test
        kind = rng.choice(KINDS)
        pod_name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        try:
            if kind in ("TerminationByKubelet", "PreemptionByScheduler"):
                cluster.sim.preempt(pod_name, NS, reason=kind, grace=10)
            elif kind == "evict":
                cluster.sim.evict(pod_name, NS)
            elif kind == "delete":
                cluster.sim.delete_pod(pod_name, NS)
            elif node:
                with _NODES:
                    cluster.sim.lose_node(node, keep_running=kind.endswith("keep-running"))
                    time.sleep(rng.uniform(0.1, 0.8))  # the node is gone for a moment
                    cluster.sim.add_node(SimNode.ondemand(node) if node.startswith("ondemand") else SimNode.spot(node))
        except Exception as e:
            done.append(f"{kind}: not injected ({type(e).__name__})")
            continue
        done.append(kind)
    return done


@pytest.mark.timeout(300)
def test_random_disruptions_every_run_finishes_exactly_once(results: Results, cluster: Cluster) -> None:
    rng = random.Random(f"{SEED}-disruptions")
    names = [f"dis-{i}" for i in range(RUNS)]
    plans = {name: (random.Random(rng.random()), rng.choice([1, 1, 2, 3])) for name in names}
    for name in names:
        cluster.submit(
            name,
            {"step_s": 0.4},
            checkpoint={"retain": "Always"},
            budgets={"maxPreemptions": 50, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
            tolerations=[{"key": SPOT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        )
    with ThreadPoolExecutor(len(names)) as pool:
        done = dict(zip(names, pool.map(lambda n: disrupt(cluster, plans[n][0], n, plans[n][1]), names)))
    by_run, lost, dups = settle_and_judge(cluster, names, 120)
    problems = [f"{x} (disruptions: {done[n]})" for n, found in by_run.items() for x in found]
    injected = sum(1 for d in done.values() for k in d if "not injected" not in k)
    results.record(
        "Pods preempted / evicted / deleted / node lost at random (operator)",
        runs=len(names),
        faults=injected,
        correct=sum(not any(p.startswith(f"{n}:") for p in problems) for n in names),
        lost=lost,
        duplicates=dups,
        test="test_random_disruptions_every_run_finishes_exactly_once",
        details=problems,
    )
    assert not problems, "\n".join(problems)

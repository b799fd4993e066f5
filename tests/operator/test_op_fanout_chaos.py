"""Issue 14's chaos fan-out, through the real operator: 30 items at parallelism 5 while pods
are preempted, evicted and lose their node at seeded random moments. Every item's output
and final context equal a clean run's, no item runs a step again past its commit (the
judge, on each child's checkpoint history), the parent's counts are right whenever they
are read, and the one item the pipeline refuses is reported by its index.

Its own cluster: losing a node must not disturb the other fan-out tests' pods.
Seed: $RESPAWN_FANOUT_CHAOS_SEED (default 14); it is in every assertion message.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from respawn_local.podsim import SimNode
from respawn_local.testkit import free_port
from respawn_operator.fanout import LABEL_PARENT_UID, child_name

from pipeline_runtime.chaos import judge
from tests.operator.harness import HERE, NS, Cluster, running_cluster

pytestmark = pytest.mark.slow  # thirty items under random disruptions, end to end

SEED = int(os.environ.get("RESPAWN_FANOUT_CHAOS_SEED", "14"))
ITEMS, PARALLELISM, BAD = 30, 5, 17
CLEAN_OUTPUT = "a,b,c,d,e 11111\n"
CLEAN_CONTEXT = {"trail": ["a", "b", "c", "d", "e"], "total": 11111}
"""What op_pipelines Items (Steps) ends with when every step ran exactly once."""
SPOT = "cloud.google.com/gke-spot"
KINDS = ["TerminationByKubelet", "PreemptionByScheduler", "evict", "lose-node"]
DISRUPTIONS = 12


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("fanout-chaos"), RESPAWN_METRICS_PORT=str(free_port())) as c:
        yield c


def children(cluster: Cluster, uid: str) -> list[dict[str, Any]]:
    return cluster.api.list("pipelineruns", NS, label_selector=f"{LABEL_PARENT_UID}={uid}")


def running_pods(cluster: Cluster, uid: str) -> list[dict[str, Any]]:
    """Live pods of the parent's children (by the children's uids)."""
    kids = {k["metadata"]["uid"] for k in children(cluster, uid)}
    return [
        p
        for p in cluster.api.list("pods", NS)
        if p["metadata"].get("labels", {}).get("respawn.dev/run-uid") in kids
        and p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def disrupt(cluster: Cluster, uid: str, rng: random.Random, stop: threading.Event, done: list[str]) -> None:
    """Up to DISRUPTIONS times: wait a random moment, pick a random running item pod, disrupt it."""
    while len(done) < DISRUPTIONS and not stop.wait(rng.uniform(0.3, 1.5)):
        pods = sorted(running_pods(cluster, uid), key=lambda p: p["metadata"]["name"])
        if not pods:
            continue
        pod = rng.choice(pods)
        kind = rng.choice(KINDS)
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        try:
            if kind == "evict":
                cluster.sim.evict(name, NS)
            elif kind == "lose-node" and node:
                cluster.sim.lose_node(node)
                stop.wait(rng.uniform(0.1, 0.6))  # the node is gone for a moment
                cluster.sim.add_node(SimNode.ondemand(node) if node.startswith("ondemand") else SimNode.spot(node))
            else:
                cluster.sim.preempt(name, NS, reason=kind, grace=10)
        except Exception as e:  # the pod may have finished meanwhile: the moment is random
            done.append(f"{kind} {name}: not injected ({type(e).__name__})")
            continue
        done.append(f"{kind} {name}")


@pytest.mark.timeout(240)
def test_thirty_items_under_random_disruptions_each_finish_once_and_the_parent_counts_right(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    outs = [cluster.tmp / (f"bad-{i}.out" if i == BAD else f"item-{i}.out") for i in range(ITEMS)]
    cluster.api.create(
        {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "chaos", "namespace": NS},
            "spec": {
                "pipeline": "op_pipelines:Items",
                "params": {"step_s": 0.15},
                "env": [{"name": "PYTHONPATH", "value": str(HERE)}],
                "terminationGracePeriodSeconds": 10,
                "checkpoint": {"retain": "Always"},
                "budgets": {"maxPreemptions": 50, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
                "tolerations": [{"key": SPOT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
                "foreach": {"param": "out", "items": [str(p) for p in outs]},
                "parallelism": PARALLELISM,
                "maxFailedItems": 1,
            },
        },
        namespace=NS,
    )
    uid = cluster.run("chaos")["metadata"]["uid"]
    names = [child_name("chaos", str(p)) for p in outs]
    done: list[str] = []
    stop = threading.Event()
    chaos = threading.Thread(target=disrupt, args=(cluster, uid, random.Random(rng.random()), stop, done))
    chaos.start()

    def why() -> str:
        return f"seed {SEED} (RESPAWN_FANOUT_CHAOS_SEED), disruptions {done}"

    last_succeeded = last_failed = reads = 0
    deadline = time.monotonic() + 150
    try:
        while True:
            st = cluster.status("chaos")
            kids = children(cluster, uid)  # read after the parent: children only move forward meanwhile
            phases = [(k.get("status") or {}).get("phase") for k in kids]
            items = st.get("items")
            if items:
                reads += 1
                counts = {k: items.get(k, 0) for k in ("pending", "running", "succeeded", "failed")}
                assert items["total"] == ITEMS and sum(counts.values()) == ITEMS, (items, why())
                assert counts["succeeded"] >= last_succeeded and counts["failed"] >= last_failed, (items, why())
                assert counts["succeeded"] <= phases.count("Succeeded"), (items, phases, why())
                assert counts["failed"] <= phases.count("Failed") and counts["running"] <= PARALLELISM, (items, why())
                assert items["progress"] == f"{counts['succeeded']}/{ITEMS}", (items, why())
                last_succeeded, last_failed = counts["succeeded"], counts["failed"]
            unfinished = [n for n, p in zip(kids, phases) if p not in ("Succeeded", "Failed")]
            assert len(unfinished) <= PARALLELISM, ([k["metadata"]["name"] for k in unfinished], why())
            assert st.get("phase") != "Failed", (st.get("message"), why())
            if st.get("phase") == "Succeeded":
                break
            assert time.monotonic() < deadline, (f"the parent did not finish: {st}", why())
            time.sleep(0.1)  # a sampling interval: the wait is bounded by the deadline above
    finally:
        stop.set()
        chaos.join(30)
    # The parent: done, the refused item reported by its index, the others succeeded.
    assert st["items"]["succeeded"] == ITEMS - 1 and st["items"]["failed"] == 1, (st["items"], why())
    [failed] = st["items"]["failedItems"]
    assert (failed["index"], failed["name"]) == (BAD, names[BAD]), (failed, why())
    assert "refused on purpose" in failed["message"], (failed, why())
    assert "within maxFailedItems 1" in st["message"], (st["message"], why())
    injected = [d for d in done if "not injected" not in d]
    assert injected, f"no disruption landed: {why()}"
    assert st["preemptions"] >= 1, (st, why())
    # Each item: one child, its clean output and context, no committed step run again.
    by_name = {k["metadata"]["name"]: k for k in children(cluster, uid)}
    assert sorted(by_name) == sorted(names), why()
    uri = f"file://{cluster.tmp / 'checkpoints'}"
    problems: list[str] = []
    for i, (name, out) in enumerate(zip(names, outs)):
        kst = by_name[name]["status"]
        if i == BAD:
            assert kst["phase"] == "Failed" and not out.exists(), (kst, why())
            continue
        assert kst["phase"] == "Succeeded", (name, kst, why())
        if out.read_text() != CLEAN_OUTPUT:
            problems.append(f"item {i}: output {out.read_text()!r}")
        context = judge.final_context(uri, kst["runId"], kst.get("tenant") or "default")
        if judge.describe_context(context) != judge.describe_context(CLEAN_CONTEXT):
            problems.append(f"item {i}: context {context}")
        runs = [(s, int(a), 0) for s, a in (line.split() for line in open(f"{out}.exec").read().splitlines())]
        verdict = judge.judge_history(judge.history(uri, kst["runId"], kst.get("tenant") or "default"), runs)
        problems += [f"item {i}: {p}" for p in verdict.problems]
        jobs = cluster.jobs(name)
        if not set(jobs) <= {f"{name}-a{n}" for n in range(1, kst["attempt"] + 1)}:
            problems.append(f"item {i}: jobs {jobs} for attempts 1..{kst['attempt']}")
    assert not problems, "\n".join(problems) + f"\n{why()}"
    resumed = sum(1 for k in by_name.values() if k["status"].get("attempt", 0) > 1)
    print(f"fan-out chaos: {reads} parent reads, {len(injected)} disruptions, {resumed} items resumed; {why()}")

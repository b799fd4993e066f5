"""End to end: two real `respawn-operator` replicas in kopf peering, one active, one standby.

The emulator serves the PipelineRun CRD and kopf's peering CRDs exactly as the Helm chart
ships them (charts/respawn/crds/), plus the ClusterKopfPeering object the chart creates
for a cluster-wide operator (templates/peering.yaml). Both replicas start with the
Deployment's flags and env (`--liveness=... --peering=respawn`, `POD_ID`, empty
`RESPAWN_NAMESPACES`): with distinct `--priority` values, and without any, as the chart
starts them (each replica then draws a random priority: kopf pauses every replica on a tie).

kopf logs the peering decisions at INFO: "Resuming operations after the pause" when a
replica finds no peer of higher or equal priority, "Pausing operations in favour of
[<Peer ...>]" when it yields. The standby is started first, so it is active before the
high-priority replica appears and must visibly yield to it (a replica that finds the
higher peer already present at startup stays in its initial pause without a log line).

RESPAWN_PEERING_LIFETIME_SECONDS shortens kopf's keep-alive lifetime (default 60 s),
which is how long the standby waits before it takes over from a replica killed without
a goodbye.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from respawn_local.apiserver import ApiServerThread
from respawn_local.podsim import PodSim
from respawn_local.testkit import free_port, runner_rbac, wait_for

from tests.operator.harness import NS, ROOT, Cluster, OperatorProcess

pytestmark = pytest.mark.slow  # two operator replicas handing over through kopf peering, end to end

PEERING = "respawn"  # the chart's operator.peering.name
LIFETIME = 8  # seconds; keep-alives every 1..3 s, takeover at most LIFETIME s after the last one
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"
GATE_PAUSED = "peering: paused, "  # the operator's own loops (resync, delayed re-checks) follow kopf
GATE_ACTIVE = "peering: active"


class Replica(OperatorProcess):
    """One operator pod of the chart's Deployment: its name is its peering identity."""

    def __init__(self, name: str, priority: int | None, env: dict[str, str], tmp: Path) -> None:
        super().__init__(
            {**env, "POD_ID": name},
            tmp / f"{name}.log",
            args=[
                f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                f"--peering={PEERING}",
                *([f"--priority={priority}"] if priority is not None else []),
            ],
        )
        self.name = name

    def says(self, line: str) -> int:
        return self.log.read_text().count(line) if self.log.exists() else 0

    def wait_says(self, line: str, times: int = 1, timeout: float = 20) -> None:
        try:
            wait_for(lambda: self.says(line) >= times, timeout, f"{self.name} to log {line!r} x{times}")
        except AssertionError:
            print(self.log.read_text())
            raise


@pytest.fixture
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Replica, Replica]]:
    api = ApiServerThread()
    api.start()
    kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
    api.create(yaml.safe_load((ROOT / "crds" / "pipelineruns.respawn.dev.yaml").read_text()))
    for crd in yaml.safe_load_all((ROOT / "charts" / "respawn" / "crds" / "kopfpeerings.kopf.dev.yaml").read_text()):
        api.create(crd)
    api.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
    for manifest in runner_rbac(NS):
        api.create(manifest)
    sim = PodSim.attached(api, work_dir=str(tmp_path / "podsim"))
    sim.start()

    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "RESPAWN_NAMESPACES": "",  # what the chart sets for a cluster-wide operator
        "RESPAWN_DEFAULT_CHECKPOINT_URI": f"file://{tmp_path / 'checkpoints'}",
        "RESPAWN_DEFAULT_IMAGE": "respawn:test",
        "RESPAWN_METRICS_PORT": "0",
        "RESPAWN_TERMINATION_GRACE_SECONDS": "30",
        "RESPAWN_RESYNC_SECONDS": "2",
        "RESPAWN_PEERING_LIFETIME_SECONDS": str(LIFETIME),
        "RESPAWN_RUNNER_SERVICE_ACCOUNT": "respawn-runner",
    }
    high, low = request.param
    standby = Replica("respawn-operator-low", low, env, tmp_path)
    active = Replica("respawn-operator-high", high, env, tmp_path)
    try:
        yield Cluster(api, sim, active, tmp_path, kubeconfig, 0), active, standby
    finally:
        active.stop()
        standby.stop()
        sim.stop()
        api.stop()
        print(f"operator logs: {active.log} {standby.log}")


def peers(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return cluster.api.get("clusterkopfpeerings", PEERING, None).get("status") or {}


@pytest.mark.parametrize("pair", [(20, 10)], indirect=True, ids=["priorities"])
def test_standby_yields_to_higher_priority_and_takes_over_after_sigkill(pair: tuple[Cluster, Replica, Replica]) -> None:
    cluster, active, standby = pair

    # The standby comes first: alone in the peering, it works ...
    standby.start()
    standby.wait_says(RESUMED)
    # ... until the higher-priority replica joins: then it yields, and only the new one works.
    active.start()
    standby.wait_says(PAUSED)
    active.wait_says(RESUMED)
    assert f"<Peer {active.name}: priority=20" in standby.log.read_text()
    assert {p: v["priority"] for p, v in peers(cluster).items()} == {active.name: 20, standby.name: 10}

    cluster.submit("first", {"step_s": 0.2})
    st = cluster.wait_phase("first", "Succeeded", timeout=30)
    assert st["attempt"] == 1 and cluster.jobs("first") == ["first-a1"]
    assert (cluster.tmp / "first.out").read_text() == "a,b,c,d,e 11111\n"
    assert standby.says(RESUMED) == 1 and standby.says(PAUSED) == 1  # paused all along
    assert active.says(PAUSED) == 0

    # kill -9: no goodbye in the peering object; the standby waits for the keep-alive to expire.
    assert active.proc is not None
    active.kill()
    killed = time.monotonic()
    cluster.submit("second", {"step_s": 0.2})
    standby.wait_says(RESUMED, times=2, timeout=LIFETIME + 10)
    took_over = time.monotonic() - killed
    st = cluster.wait_phase("second", "Succeeded", timeout=30)
    assert st["attempt"] == 1 and cluster.jobs("second") == ["second-a1"]
    assert (cluster.tmp / "second.out").read_text() == "a,b,c,d,e 11111\n"
    assert cluster.jobs("first") == ["first-a1"]  # the finished run is left alone
    assert active.name not in peers(cluster)  # the dead peer was cleaned from the peering object
    assert took_over <= LIFETIME + 10
    print(f"standby took over {took_over:.1f}s after the kill")


@pytest.mark.parametrize("pair", [(None, None)], indirect=True, ids=["chart-no-priorities"])
def test_replicas_started_as_the_chart_starts_them_serve_runs(pair: tuple[Cluster, Replica, Replica]) -> None:
    # The chart's Deployment passes no --priority: each replica draws its own, so they
    # never tie (kopf pauses every replica on a tie, and then no run is served).
    cluster, first, second = pair
    first.start()
    first.wait_says(RESUMED)
    second.start()
    wait_for(lambda: len(peers(cluster)) == 2, 20, "both replicas in the peering object")
    priorities = {p: v["priority"] for p, v in peers(cluster).items()}
    assert len(set(priorities.values())) == 2 and min(priorities.values()) > 0
    cluster.submit("served", {"step_s": 0.2})
    st = cluster.wait_phase("served", "Succeeded", timeout=30)
    assert st["attempt"] == 1 and cluster.jobs("served") == ["served-a1"]
    # Exactly one works: the higher draw; the other yielded (or never resumed).
    winner = max(priorities, key=lambda p: priorities[p])
    working = {r.name: r.says(RESUMED) - r.says(PAUSED) for r in (first, second)}
    assert working == {r.name: int(r.name == winner) for r in (first, second)}


@pytest.mark.parametrize("pair", [(20, 10)], indirect=True, ids=["priorities"])
def test_a_paused_replica_does_not_act_until_the_peer_keepalive_expires(pair: tuple[Cluster, Replica, Replica]) -> None:
    """kopf's pause stops its watches; the reconciler's resync and re-checks must stop too.

    The low replica starts a run's attempt 1 alone, then yields to the high one. The high
    one freezes (SIGSTOP: no goodbye, no more keep-alives) and the run's pod is preempted:
    the paused low replica must leave attempt 2 alone until kopf would resume it, i.e.
    until the frozen peer's lastseen + lifetime is past.
    """
    cluster, high, low = pair
    low.start()
    low.wait_says(RESUMED)
    low.wait_says(GATE_ACTIVE)
    cluster.submit("held", {"step_s": 3.0})  # 5 steps of 3 s: still running when preempted
    pod = cluster.running_pod("held", 1)
    assert cluster.jobs("held") == ["held-a1"]

    high.start()
    low.wait_says(PAUSED)
    low.wait_says(f"{GATE_PAUSED}{high.name} has priority 20")  # within lifetime/4 = 2 s of kopf's pause
    high.wait_says(RESUMED)
    assert high.proc is not None
    pid = high.proc.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        assert cluster.status("held").get("phase") == "Running"
        preempting = cluster.sim.preempt(pod, NS, reason="PreemptionByScheduler", grace=10, wait=False)
        assert preempting is not None

        # Poll both, the log line first and the Job second, and keep the poll each was
        # first seen at: a resume logged before a poll's Job read counts as before that
        # Job. (Reading the Job first and comparing times failed whenever the resume and
        # the Job it leads to both landed within one poll: the Job got the earlier time.)
        seen: dict[str, int] = {}
        polls = [0]

        def both() -> bool:
            polls[0] += 1
            if "resumed" not in seen and low.says(RESUMED) >= 2:
                seen["resumed"] = polls[0]
            if "job" not in seen and "held-a2" in cluster.jobs("held"):
                seen["job"] = polls[0]
            return len(seen) == 2

        try:
            wait_for(both, LIFETIME + 30, "the low replica to resume and start attempt 2")
        except AssertionError:
            print(low.log.read_text())
            raise
        preempting.result(60)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
        high.proc.wait(10)

    # kopf resumes the low replica only once the frozen peer's lastseen + lifetime is past.
    assert seen["resumed"] <= seen["job"], (
        f"attempt 2's Job was seen at poll {seen['job']}, the resume at {seen['resumed']}"
    )
    assert low.says(GATE_ACTIVE) == 2 and low.says(GATE_PAUSED) == 1
    st = cluster.wait_phase("held", "Succeeded", timeout=60)
    assert st["attempt"] == 2 and st["preemptions"] == 1
    assert cluster.jobs("held") == ["held-a1", "held-a2"]
    assert (cluster.tmp / "held.out").read_text() == "a,b,c,d,e 11111\n"
    print(f"attempt 2 started {seen['job'] - seen['resumed']:.2f}s after the resume")

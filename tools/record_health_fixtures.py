"""Record PipelineRuns as the real operator writes them, for the Argo CD health tests.

    .venv/bin/python -m tools.record_health_fixtures

Starts the operator e2e harness (tests/operator/harness.py: the API emulator, the
pod simulator running real ``pipeline-runtime`` processes, and a ``respawn-operator``
subprocess), drives runs through preemption, failure and suspension, snapshots each
PipelineRun whenever its phase (or ``spec.suspend``) changes, and writes them to
tests/ship/fixtures/e2e_pipelineruns.yaml with the Argo CD health the contract asks for. Takes
about half a minute; the committed file is what the tests read.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from respawn_local.testkit import free_port

from tests.operator import harness as e2e

OUT = Path(__file__).resolve().parents[1] / "tests" / "ship" / "fixtures" / "e2e_pipelineruns.yaml"
HEALTH = {
    "Pending": "Progressing",
    "Running": "Progressing",
    "Retrying": "Progressing",
    "Suspended": "Suspended",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
}


class Recorder:
    """Polls runs and keeps a copy each time what the health check reads changes."""

    def __init__(self, cluster: e2e.Cluster) -> None:
        self.cluster = cluster
        self.names: list[str] = []
        self.seen: dict[str, list[tuple[Any, ...]]] = {}
        self.records: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, name: str) -> None:
        self.names.append(name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name in list(self.names):
                try:
                    obj = self.cluster.run(name)
                except Exception:  # noqa: BLE001, S112 - not created yet, or deleted: the next poll sees it
                    continue
                st = obj.get("status") or {}
                key = (
                    st.get("phase"),
                    bool(obj["spec"].get("suspend")),
                    st.get("attempt"),
                    obj["metadata"].get("generation") == st.get("observedGeneration"),
                )
                if key not in self.seen.setdefault(name, []):
                    self.seen[name].append(key)
                    self.records.append(_trim(obj))
            time.sleep(0.02)

    @contextlib.contextmanager
    def running(self) -> Iterator[Recorder]:
        self._thread.start()
        try:
            yield self
        finally:
            time.sleep(0.5)
            self._stop.set()
            self._thread.join()


def _trim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation") if k in meta},
        "spec": {k: v for k, v in obj["spec"].items() if k != "env"},
        **({"status": obj["status"]} if obj.get("status") else {}),
    }


def _expected(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    if not st.get("phase") or (st.get("observedGeneration") or 0) < obj["metadata"].get("generation", 0):
        return "Progressing"
    return HEALTH[st["phase"]]


def record(cluster: e2e.Cluster) -> list[dict[str, Any]]:
    rec = Recorder(cluster)
    with rec.running():
        rec.watch("preempted")
        cluster.submit("preempted", {"step_s": 0.5})
        cluster.wait_status("preempted", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
        cluster.sim.preempt(cluster.running_pod("preempted", 1), e2e.NS, reason="PreemptionByScheduler", grace=10)
        cluster.wait_status(
            "preempted", lambda st: st.get("attempt") == 2 and st.get("phase") == "Running", "attempt 2"
        )
        cluster.wait_phase("preempted", "Succeeded")

        rec.watch("broken")
        cluster.submit(
            "broken",
            {"step_s": 0.05, "fail_in": "b"},
            budgets={"maxFailures": 1, "backoff": {"initialSeconds": 1, "maxSeconds": 1}},
        )
        cluster.wait_phase("broken", "Failed")

        rec.watch("pause")
        cluster.submit("pause", {"step_s": 0.6})
        cluster.wait_status("pause", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
        cluster.patch_spec("pause", {"suspend": True})
        cluster.wait_phase("pause", "Suspended")
        cluster.patch_spec("pause", {"suspend": False})
        cluster.wait_phase("pause", "Succeeded")
    return [{"name": _label(i, r), "health": _expected(r), "object": r} for i, r in enumerate(rec.records)]


def _label(index: int, obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    label = f"{index:02d}-{obj['metadata']['name']}-{(st.get('phase') or 'new').lower()}"
    if obj["spec"].get("suspend"):
        label += "-suspend"
    if (st.get("observedGeneration") or 0) < obj["metadata"].get("generation", 0) and st:
        label += "-unobserved"
    return label


def main() -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        e2e.running_cluster(Path(tmp), RESPAWN_METRICS_PORT=str(free_port())) as cluster,
    ):
        cases = record(cluster)
    header = (
        "# PipelineRuns as the real operator wrote them (respawn-operator against the API emulator,\n"
        "# pod simulator running pipeline-runtime), recorded by tools/record_health_fixtures.py.\n"
        "# `health` is what DESIGN.md asks Argo CD to show; tests/ship/test_argocd_health.py checks it.\n"
    )
    OUT.write_text(header + yaml.safe_dump(cases, sort_keys=False, width=120))
    phases = sorted({(c["object"].get("status") or {}).get("phase") or "-" for c in cases})
    print(f"wrote {len(cases)} objects to {OUT} (phases: {', '.join(phases)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

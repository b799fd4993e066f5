"""The Argo CD health check on PipelineRuns as the operator really writes them.

Objects come from three places:
- fixtures/e2e_pipelineruns.yaml: recorded from the real operator process against the API
  emulator and pod simulator (tools/record_health_fixtures.py re-records them);
- the operator's reconciler (``respawn_operator.reconcile.decide``) driven here through a
  run's life, so a change in what it writes is tested at once;
- fixtures/pipelinerun_health.yaml: hand-written edge cases (older operators, odd states).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from respawn_operator.config import OperatorConfig
from respawn_operator.reconcile import Observed, decide
from respawn_operator.spec import Phase, PipelineRunStatus

from tests.ship.lua_health import SCRIPT, HealthCheck

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "pipelinerun_health.yaml"
E2E_FIXTURES = Path(__file__).parent / "fixtures" / "e2e_pipelineruns.yaml"
ARGO_STATES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

CONFIG = OperatorConfig(default_checkpoint_uri="file:///ckpt")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def status_patch(new: PipelineRunStatus) -> dict[str, Any]:
    """Every status field as stored after the operator writes ``new`` (``None``: absent),
    as the executor writes it (``exclude_none``)."""
    full = new.model_dump(by_alias=True, mode="json")
    lean = new.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {key: lean.get(key) for key in full}


@pytest.fixture(scope="module")
def health() -> HealthCheck:
    return HealthCheck()


# --- driving the real reconciler -------------------------------------------------------


class Run:
    """A PipelineRun as the API server would hold it, advanced by the operator's decide()."""

    def __init__(self, **spec: Any) -> None:
        self.body: dict[str, Any] = {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
            "spec": {"pipeline": "dataprep", **spec},
        }
        self.clock = 0.0

    def see(self, obs: Observed, after: float = 1.0) -> dict[str, Any]:
        self.clock += after
        d = decide(self.body, obs, T0 + dt.timedelta(seconds=self.clock), CONFIG)
        patch = status_patch(d.status)
        # A JSON round trip, like the API server and Argo CD's JSON-to-Lua conversion.
        self.body = json.loads(json.dumps({**self.body, "status": {k: v for k, v in patch.items() if v is not None}}))
        return self.body

    def edit_spec(self, **changes: Any) -> dict[str, Any]:
        self.body["spec"].update(changes)
        self.body["metadata"]["generation"] += 1
        return self.body


def pod(
    phase: str,
    exit_code: int | None = None,
    *,
    progress: dict[str, Any] | None = None,
    disruption: str | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if exit_code is not None:
        term: dict[str, Any] = {"exitCode": exit_code}
        if report:
            term["message"] = json.dumps(report)
        status["containerStatuses"] = [{"name": "pipeline", "state": {"terminated": term}}]
    if disruption:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    annotations = {"respawn.dev/progress": json.dumps(progress)} if progress else {}
    return {"metadata": {"name": "r-a1-x", "annotations": annotations}, "spec": {"nodeName": "n1"}, "status": status}


JOB: dict[str, Any] = {"status": {}}


def progress(attempt: int, done: int, current: str) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "currentStep": current,
        "completedSteps": done,
        "totalSteps": 5,
        "lastCheckpoint": {"step": "detect", "seq": done},
    }


def test_a_run_is_progressing_until_it_succeeds(health: HealthCheck) -> None:
    run = Run()
    assert health(run.body) == {
        "status": "Progressing",
        "message": "Waiting for the Respawn operator to pick up the run",
    }
    body = run.see(Observed())
    assert body["status"]["phase"] == "Pending" and health(body)["status"] == "Progressing"
    body = run.see(Observed(job=JOB, pod=pod("Running", progress=progress(1, 2, "crop_frames")), node_exists=True))
    assert body["status"]["phase"] == "Running"
    assert health(body) == {"status": "Progressing", "message": "Running: step 2/5 (crop_frames)"}
    body = run.see(Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert body["status"]["phase"] == "Succeeded"
    assert health(body)["status"] == "Healthy"


@pytest.mark.parametrize("disruption", ["PreemptionByScheduler", "TerminationByKubelet", "EvictionByEvictionAPI"])
def test_a_preempted_run_being_rescheduled_is_progressing_not_degraded(health: HealthCheck, disruption: str) -> None:
    run = Run()
    run.see(Observed())
    run.see(Observed(job=JOB, pod=pod("Running", progress=progress(1, 3, "crop_frames")), node_exists=True))
    body = run.see(Observed(job=JOB, pod=pod("Failed", 143, disruption=disruption)))
    assert body["status"]["phase"] == "Retrying" and body["status"]["preemptions"] == 1
    verdict = health(body)
    assert verdict["status"] == "Progressing", verdict
    assert verdict["message"].startswith("Retrying")
    body = run.see(Observed(job=JOB, pod=pod("Running", progress=progress(2, 4, "detect")), node_exists=True))
    assert health(body) == {"status": "Progressing", "message": "Running: step 4/5 (detect), 1 preemption"}


def test_a_lost_node_is_progressing(health: HealthCheck) -> None:
    run = Run()
    run.see(Observed())
    body = run.see(Observed(job=JOB, pod=pod("Running"), node_exists=False))
    assert body["status"]["attempts"][0]["reason"] == "NodeLost"
    assert health(body)["status"] == "Progressing"


def test_a_failure_with_budget_left_is_progressing_then_degraded_when_spent(health: HealthCheck) -> None:
    run = Run(budgets={"maxFailures": 1, "backoff": {"initialSeconds": 10, "maxSeconds": 60}})
    run.see(Observed())
    body = run.see(Observed(job=JOB, pod=pod("Failed", 1)))
    assert body["status"]["phase"] == "Retrying" and health(body)["status"] == "Progressing"
    run.see(Observed(), after=11)
    body = run.see(Observed(job=JOB, pod=pod("Failed", 1)))
    assert body["status"]["phase"] == "Failed"
    assert health(body) == {"status": "Degraded", "message": body["status"]["message"]}
    assert "maxFailures=1" in health(body)["message"]


def test_invalid_params_are_degraded_with_the_runtimes_reason(health: HealthCheck) -> None:
    run = Run()
    run.see(Observed())
    report = {"exitCode": 64, "reason": "InvalidInput", "message": "crop_size: must be > 0"}
    body = run.see(Observed(job=JOB, pod=pod("Failed", 64, report=report)))
    verdict = health(body)
    assert verdict["status"] == "Degraded" and "crop_size" in verdict["message"]


def test_an_invalid_spec_is_degraded(health: HealthCheck) -> None:
    body = Run(budgets={"backoff": {"initialSeconds": 100, "maxSeconds": 1}}).see(Observed())
    verdict = health(body)
    assert verdict["status"] == "Degraded" and "maxSeconds" in verdict["message"]


def test_preemption_budget_spent_is_degraded(health: HealthCheck) -> None:
    run = Run(budgets={"maxPreemptions": 0})
    run.see(Observed())
    body = run.see(Observed(job=JOB, pod=pod("Failed", 143)))
    assert health(body)["status"] == "Degraded" and "maxPreemptions=0" in health(body)["message"]


def test_suspend_is_progressing_while_it_stops_then_suspended_then_progressing_again(health: HealthCheck) -> None:
    run = Run()
    run.see(Observed())
    run.see(Observed(job=JOB, pod=pod("Running", progress=progress(1, 2, "crop_frames")), node_exists=True))
    body = run.edit_spec(suspend=True)
    assert health(body)["status"] == "Progressing"  # the operator has not seen generation 2 yet
    assert "generation 2" in health(body)["message"]
    body = run.see(Observed(job=JOB, pod=pod("Running"), node_exists=True))
    assert body["status"]["phase"] == "Running"
    verdict = health(body)
    assert verdict["status"] == "Progressing" and verdict["message"].startswith("Suspending")
    body = run.see(Observed(job=None, pod=pod("Failed", 143)))
    assert body["status"]["phase"] == "Suspended"
    assert health(body)["status"] == "Suspended"
    body = run.edit_spec(suspend=False)
    assert health(body)["status"] == "Progressing"
    body = run.see(Observed())
    assert body["status"]["phase"] in ("Pending", "Running", "Retrying") and health(body)["status"] == "Progressing"


def test_rerun_of_a_finished_run_is_progressing_then_healthy(health: HealthCheck) -> None:
    run = Run()
    run.see(Observed())
    body = run.see(Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert health(body)["status"] == "Healthy"
    run.edit_spec(rerunFrom="crop")
    body = run.see(Observed())
    assert health(body)["status"] == "Progressing"
    body = run.see(Observed(job=JOB, pod=pod("Succeeded", 0)))
    assert health(body)["status"] == "Healthy"


def test_every_phase_the_operator_knows_maps_to_an_argo_state(health: HealthCheck) -> None:
    expected = {
        "Pending": "Progressing",
        "Running": "Progressing",
        "Retrying": "Progressing",
        "Suspended": "Suspended",
        "Succeeded": "Healthy",
        "Failed": "Degraded",
    }
    assert set(expected) == {p.value for p in Phase}
    for phase, state in expected.items():
        obj = {"metadata": {"generation": 1}, "spec": {}, "status": {"phase": phase, "observedGeneration": 1}}
        verdict = health(obj)
        assert verdict["status"] == state and verdict["message"], (phase, verdict)


# --- recorded objects and edge cases ----------------------------------------------------


def _fixtures(path: Path = FIXTURES) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("case", _fixtures(E2E_FIXTURES), ids=lambda c: c["name"])
def test_pipelineruns_recorded_from_the_running_operator(health: HealthCheck, case: dict[str, Any]) -> None:
    verdict = health(case["object"])
    assert verdict["status"] == case["health"], verdict
    status = case["object"].get("status") or {}
    if status.get("phase") == "Failed":
        assert verdict["message"] == status["message"]


def test_the_recording_covers_every_phase_and_a_preemption() -> None:
    cases = _fixtures(E2E_FIXTURES)
    phases = {(c["object"].get("status") or {}).get("phase") for c in cases}
    assert {p.value for p in Phase} <= phases
    assert any(
        (c["object"].get("status") or {}).get("phase") == "Retrying"
        and any(a.get("outcome") == "Preempted" for a in c["object"]["status"].get("attempts", []))
        for c in cases
    )


@pytest.mark.parametrize("case", _fixtures(), ids=lambda c: c["name"])
def test_recorded_pipelineruns(health: HealthCheck, case: dict[str, Any]) -> None:
    verdict = health(case["object"])
    assert verdict["status"] == case["health"]
    if "message" in case:
        assert re.search(case["message"], verdict["message"]), verdict["message"]


def test_an_unknown_phase_is_unknown_not_an_error(health: HealthCheck) -> None:
    assert health({"status": {"phase": "Exploded"}})["status"] == "Unknown"


def test_the_check_always_returns_a_known_state_and_a_message(health: HealthCheck) -> None:
    obj: dict[str, Any]
    for obj in (
        {},
        {"metadata": {}},
        {"status": {}},
        {"spec": {"suspend": True}, "status": {"phase": "Running"}},
        {"status": {"phase": "Failed", "conditions": []}},
        {"status": {"phase": "Succeeded"}},
    ):
        verdict = health(obj)
        assert verdict["status"] in ARGO_STATES and verdict["message"], (obj, verdict)


def test_the_docs_and_the_chart_carry_the_same_lua(health: HealthCheck) -> None:
    source = SCRIPT.read_text()
    assert (ROOT / "charts" / "respawn" / "files" / SCRIPT.name).read_text() == source
    docs = (ROOT / "docs" / "argocd.md").read_text()
    blocks = re.findall(r"```lua\n(.*?)```", docs, re.S)
    assert source in blocks, "docs/argocd.md must show argocd/health-pipelinerun.lua verbatim"
    # The argocd-cm snippet in the docs is the same script, indented under the key.
    indented = "".join("    " + line if line.strip() else line for line in source.splitlines(True))
    assert "resource.customizations.health.respawn.dev_PipelineRun: |\n" + indented in docs


def test_the_sandbox_catches_a_global_argo_cd_would_not_have() -> None:
    # Guards the harness: a check that used an undefined global must fail here, not pass on nil.
    with pytest.raises(Exception, match="unknown global"):
        HealthCheck("if obj.status == nil then return {status = Helath} end return {}")({})


def test_a_fan_out_parent_is_progressing_healthy_or_degraded_by_its_items(health: HealthCheck) -> None:
    from respawn_operator.fanout import child_name, child_spec, decide_parent
    from respawn_operator.spec import parse_spec

    body: dict[str, Any] = {
        "metadata": {"name": "clips", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"pipeline": "dataprep", "foreach": {"param": "video_uri", "items": ["a", "b", "c"]}},
    }
    spec = parse_spec(body["spec"])

    def child(item: str, phase: str, **status: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": child_name("clips", item), "generation": 1},
            "spec": child_spec(body["spec"], "video_uri", item),
            "status": {"phase": phase, "observedGeneration": 1, **status},
        }

    def seen(children: list[dict[str, Any]]) -> dict[str, str]:
        d = decide_parent(body, spec, ["a", "b", "c"], None, children, T0)
        obj = json.loads(json.dumps({**body, "status": status_patch(d.status)}))
        return health({k: v for k, v in obj.items()})

    assert seen([child("a", "Succeeded"), child("b", "Running", preemptions=2)]) == {
        "status": "Progressing",
        "message": "Running: items 1/3, 1 running, 2 preemptions",
    }
    assert seen([child(i, "Succeeded") for i in "abc"])["status"] == "Healthy"
    failed = seen([child("a", "Failed", message="video_uri: not found"), child("b", "Running")])
    assert failed["status"] == "Degraded" and "item 0" in failed["message"]

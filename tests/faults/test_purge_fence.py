"""Deleting a PipelineRun purges its checkpoint (`pipeline-runtime cleanup --purge`, the
tombstone included). An attempt still alive at that moment (its node vanished with the
process running, so the operator saw the pod gone) must not bring the run back: it
stops with 76 and leaves nothing under the run's prefix.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.storage import open_store
from tests.conftest import VENV_BIN
from tests.faults.harness import FAULT_ENV, checkpoint_uri, run_args
from tests.faults.results import Results
from tests.runtime.conftest import Runtime


@pytest.mark.parametrize("store", ["file", "gs"])
def test_live_attempt_does_not_resurrect_a_purged_run(
    results: Results, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    uri = checkpoint_uri(store, tmp_path, request, "purge-fence")
    rt, gate = Runtime(tmp_path), tmp_path / "gate"
    proc = rt.start(
        run_args("sweep", uri, tmp_path / "out.txt", 1, run_id="gone"),
        env={**FAULT_ENV, "GATE": "step:stats", "GATE_FILE": str(gate)},
    )
    wait_for(
        lambda: Path(f"{gate}.waiting").exists() or proc.poll() is not None, 60, "the attempt to hold inside step stats"
    )
    purge = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "cleanup", uri, "--run-id", "gone", "--purge"],
        env=rt._env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert purge.returncode == 0, purge.stderr
    gate.write_text("go")
    code = proc.wait(90)
    left = open_store(uri).list("default/gone/")
    problems = []
    if code != 76:
        problems.append(f"the stale attempt exited {code}, expected 76")
    if left:
        problems.append(f"{len(left)} objects under the purged run: {left[:3]}")
    results.record(
        f"Attempt alive while its run is purged ({store}://)",
        runs=1,
        faults=1,
        correct=int(not problems),
        lost=0,
        duplicates=len(left),
        test=f"test_live_attempt_does_not_resurrect_a_purged_run[{store}]",
        details=problems,
    )
    assert not problems, "\n".join(problems)

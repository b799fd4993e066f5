"""A run killed while it cleans up after success (the tombstone is written, the
artifacts are being deleted) is finished: the next attempt must not run it again.

This is what a pod preempted in its last second looks like to the operator: no exit 0,
so it starts another attempt with resume on.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from respawn_local.testkit import wait_for

from pipeline_runtime.storage import open_store
from tests.faults.harness import FAULT_ENV, checkpoint_uri, reference, run_args
from tests.faults.results import Results
from tests.runtime.conftest import Runtime

pytestmark = pytest.mark.slow  # real processes killed during cleanup, then resumed


@pytest.mark.parametrize("store", ["file", "gs"])
def test_killed_during_cleanup_the_next_attempt_does_not_run_again(
    results: Results, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    uri = checkpoint_uri(store, tmp_path, request, "cleanup-kill")
    ref = reference("sweep", tmp_path / "reference-sweep")
    rt, out, gate = Runtime(tmp_path), tmp_path / "out.txt", tmp_path / "gate"
    proc = rt.start(
        run_args("sweep", uri, out, 1, run_id="tidy", retain="OnFailure"),
        env={**FAULT_ENV, "GATE": "delete:1", "GATE_FILE": str(gate)},
    )
    wait_for(lambda: Path(f"{gate}.waiting").exists() or proc.poll() is not None, 60, "the run to start its cleanup")
    assert proc.poll() is None, "the run ended before its cleanup"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    first_output = out.read_bytes()
    code, text, term = rt.run(run_args("sweep", uri, out, 2, run_id="tidy", retain="OnFailure"), env=FAULT_ENV)
    again = [s for s, a, _ in rt.executions() if a == 2]
    problems = []
    if first_output != ref.out or out.read_bytes() != ref.out:
        problems.append("output differs from the clean run")
    if again:
        problems.append(f"attempt 2 ran {again} again after attempt 1's tombstone (outcome Succeeded)")
    if code not in (0, 76):
        problems.append(f"attempt 2 exited {code}: {term}")
    # The interrupted cleanup is finished by someone: no artifact of the run is left, and
    # every commit but the newest tombstone is a stub.
    objects = open_store(uri)
    left = objects.list("default/tidy/artifacts/")
    kinds = [json.loads(objects.get(p)).get("kind") for p in objects.list("default/tidy/commits/")]
    if left:
        problems.append(f"{len(left)} artifacts left after the run was retired")
    if kinds[-1:] != ["tombstone"] or set(kinds[:-1]) - {"stub", "tombstone"}:
        problems.append(f"commits after retirement: {kinds}")
    results.record(
        f"Killed during cleanup after success ({store}://)",
        runs=1,
        faults=1,
        correct=int(not problems),
        duplicates=len(again),
        test=f"test_killed_during_cleanup_the_next_attempt_does_not_run_again[{store}]",
        details=problems,
    )
    assert not problems, "\n".join(problems)

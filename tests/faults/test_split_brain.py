"""Split brain: attempts that keep running after a newer attempt claimed the run
(their node "vanished" and came back). A stale attempt must never commit after the
newer claim, must exit 76, and the final output and checkpoint are the newer
attempt's. Several interleavings, held still with gates (tests/faults/pipelines.py),
on file:// and gs://.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GCSEmulator
from tests.faults.harness import FAULT_ENV, Play, checkpoint_uri, full_history, reference, run_args, verify
from tests.faults.results import Results
from tests.runtime.conftest import Runtime, termination

pytestmark = pytest.mark.slow  # stale attempts racing live ones, as real processes

# Each interleaving is a script of operations on numbered attempts (harness.Play).
INTERLEAVINGS: dict[str, list[tuple[Any, ...]]] = {
    # The textbook case: the old attempt is inside a step when the new one takes over.
    "old mid-step, new finishes, old wakes": [
        ("start", 1, "step:stats"),
        ("held", 1),
        ("start", 2, None),
        ("exit", 2, {0}),
        ("release", 1),
        ("exit", 1, {76}),
    ],
    # Both alive and both inside steps: the old one wakes while the new one works.
    "old wakes while new is mid-step": [
        ("start", 1, "step:stats"),
        ("held", 1),
        ("start", 2, "step:shapes"),
        ("held", 2),
        ("release", 1),
        ("exit", 1, {76}),
        ("release", 2),
        ("exit", 2, {0}),
    ],
    # The old attempt stored its artifacts and is about to create the commit object.
    "old between uploads and commit, new finishes": [
        ("start", 1, "commit:3"),
        ("held", 1),
        ("start", 2, None),
        ("exit", 2, {0}),
        ("release", 1),
        ("exit", 1, {76}),
    ],
    "old between uploads and commit, new mid-step": [
        ("start", 1, "commit:3"),
        ("held", 1),
        ("start", 2, "step:mix"),
        ("held", 2),
        ("release", 1),
        ("exit", 1, {76}),
        ("release", 2),
        ("exit", 2, {0}),
    ],
    # The old attempt commits between the new one's read of the log and its claim:
    # the claim loses the slot, reads again, and claims the next one.
    "old commits between new's read and claim": [
        ("start", 1, "step:stats"),
        ("held", 1),
        ("start", 2, "commit:3"),
        ("held", 2),
        ("release", 1),
        ("release", 2),
        ("exit", 2, {0}),
        ("exit", 1, {0, 76}),
    ],
    # Two stale attempts at once, the third wins.
    "two stale attempts, third finishes": [
        ("start", 1, "step:stats"),
        ("held", 1),
        ("start", 2, "step:shapes"),
        ("held", 2),
        ("start", 3, None),
        ("exit", 3, {0}),
        ("release", 1),
        ("release", 2),
        ("exit", 1, {76}),
        ("exit", 2, {76}),
    ],
    # Several resumes started at once after a kill (an operator double-start).
    "three resumes race after a kill": [
        ("start", 1, "step:touch"),
        ("held", 1),
        ("kill", 1),
        ("exit", 1, {-9}),
        ("start", 2, None),
        ("start", 3, None),
        ("start", 4, None),
        ("exit", 2, {0, 76}),
        ("exit", 3, {0, 76}),
        ("exit", 4, {0, 76}),
    ],
}


def play(results: Results, tmp: Path, uri: str, name: str, store: str, retain: str = "Always") -> Play:
    ref = reference("sweep", tmp.parent / "reference-sweep")
    out = tmp / "out.txt"
    p = Play(Runtime(tmp), tmp, lambda n: run_args("sweep", uri, out, n, run_id="split", retain=retain), FAULT_ENV)
    problems: list[str] = []
    try:
        for op in INTERLEAVINGS[name]:
            p.do(op)
    except AssertionError as e:
        problems.append(str(e))
    finally:
        p.stop_all()
    winner = max(n for n, c in p.codes.items() if c == 0) if 0 in p.codes.values() else None
    duplicates = 0
    if retain == "Always" and not problems:
        verdict = verify(p.rt, uri, "split", "sweep", out, ref=ref)
        problems += verdict.problems
        duplicates += verdict.duplicates
        final = [h for h in full_history(uri, "split") if h.get("kind") == "final"]
        if not final or final[-1]["attempt"] != winner:
            problems.append(f"final commit by {final and final[-1]['attempt']}, winner was attempt {winner}")
    stale = sum(1 for c in p.codes.values() if c in (76, -9))
    results.record(
        f"Split brain: stale attempts ({store})",
        runs=1,
        faults=max(stale, 1),
        correct=int(not problems),
        duplicates=duplicates,
        test=f"test_split_brain[{name}-{store}]",
        details=[f"{name}: {x}" for x in problems],
    )
    assert not problems, "\n".join(problems)
    return p


@pytest.mark.parametrize("name", sorted(INTERLEAVINGS))
def test_stale_attempt_never_commits_after_claim_file(results: Results, tmp_path: Path, name: str) -> None:
    play(results, tmp_path, f"file://{tmp_path}/ck", name, "file://")


GCS_SUBSET = [
    "old between uploads and commit, new mid-step",
    "old commits between new's read and claim",
    "three resumes race after a kill",
]


@pytest.mark.parametrize("name", GCS_SUBSET)
def test_stale_attempt_never_commits_after_claim_gcs(
    results: Results, tmp_path: Path, gcs_emulator: GCSEmulator, name: str
) -> None:
    bucket = gcs_emulator.make_bucket("split-" + str(GCS_SUBSET.index(name)))
    play(results, tmp_path, f"gs://{bucket}/ck", name, "gs://")


@pytest.mark.parametrize("store", ["file", "gs"])
def test_stale_attempt_wakes_after_cleanup_uploads_nothing(
    results: Results, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """The old attempt holds before an artifact upload; the new one finishes and retires
    the run to a tombstone; the old one wakes: exit 76, and no artifact is left behind."""
    if store == "gs":
        emu: GCSEmulator = request.getfixturevalue("gcs_emulator")
        bucket = emu.make_bucket("split-retired")
        uri = f"gs://{bucket}/ck"

        def leftovers() -> list[str]:
            return [b.name for b in emu.client().list_blobs(bucket) if "/artifacts/" in b.name]
    else:
        uri = f"file://{tmp_path}/ck"

        def leftovers() -> list[str]:
            root = tmp_path / "ck" / "default" / "split" / "artifacts"
            return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []

    INTERLEAVINGS.setdefault(
        "old before an upload, new finishes and retires",
        [
            ("start", 1, "artifact:2"),
            ("held", 1),
            ("start", 2, None),
            ("exit", 2, {0}),
            ("release", 1),
            ("exit", 1, {76}),
        ],
    )
    p = play(
        results, tmp_path, uri, "old before an upload, new finishes and retires", f"{store}://", retain="OnFailure"
    )
    term = termination(p.procs[1])
    assert term is not None and "finished" in term["message"]
    assert leftovers() == []
    info = p.rt.inspect(uri, "split")
    assert info["kind"] == "tombstone" and info["outcome"] == "Succeeded"


@pytest.mark.parametrize("store", ["file", "gs"])
def test_stale_attempt_does_not_run_the_output_step(
    results: Results, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    uri = checkpoint_uri(store, tmp_path, request, "split-runahead")
    p = play(results, tmp_path, uri, "old between uploads and commit, new finishes", f"{store}://")
    stale_outputs = [a for s, a, _ in p.rt.executions() if s == "finish" and p.codes.get(a) == 76]
    results.record(
        f"Stale attempt with a held commit stops before the output step ({store}://)",
        runs=1,
        faults=1,
        correct=int(not stale_outputs),
        duplicates=len(stale_outputs),
        test=f"test_stale_attempt_does_not_run_the_output_step[{store}]",
    )
    assert stale_outputs == [], f"stale attempts {stale_outputs} ran the output step"

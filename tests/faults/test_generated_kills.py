"""Generated pipelines, generated interruptions: a resumed run ends exactly as a clean run.

Hypothesis draws what each step of `Generated` writes (colliding bytes, tuples, numpy
scalars, Fortran-ordered big-endian arrays, dicts in odd key order, arrays over the
inline limit, steps that save progress) and one to three interruptions of real
`pipeline-runtime` processes: SIGKILL, SIGTERM or SIGINT after N commits, or a SIGKILL
while paused before the Nth artifact upload or before a commit lands. The run is then
resumed with increasing attempts. Oracle: the clean run's description of its whole
context (types, dtypes, shapes, bytes, key order), and the history checker: no
committed step ran again, nothing committed was lost, no fenced writer got through.

Size: the `ci` profile runs $RESPAWN_GENERATED_RUNS examples (default 20), derandomized;
HYPOTHESIS_PROFILE=slow runs 300 fresh ones.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.faults.harness import (
    GENERATED_ENV,
    claims_disagree,
    fenced_writes,
    full_history,
    generated_args,
    interrupt_as_drawn,
    lost_in_history,
    newest_completed,
    reran_after_commit,
)
from tests.faults.results import Results
from tests.runtime.conftest import Runtime
from tests.runtime.pipelines_for_tests import GENERATED_STEPS

# Generated pipelines interrupted and resumed as real processes (size: HYPOTHESIS_PROFILE, RESPAWN_GENERATED_RUNS).
pytestmark = pytest.mark.slow

RECIPES = [
    "floats",
    "collide32",
    "collide64",
    "zeros",
    "empty",
    "tuple",
    "scalar",
    "bigendian",
    "order",
    "bytearray",
    "bool",
    "big",
]
SLOW = os.environ.get("HYPOTHESIS_PROFILE") == "slow"
EXAMPLES = 300 if SLOW else int(os.environ.get("RESPAWN_GENERATED_RUNS", "20"))

PLANS = st.lists(st.tuples(st.sampled_from(RECIPES), st.integers(0, 5)), min_size=1, max_size=GENERATED_STEPS)
INTERRUPTIONS = st.lists(
    st.tuples(st.sampled_from(["KILL", "TERM", "INT", "pause-artifact", "pause-commit"]), st.integers(1, 10)),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated-kills")


@pytest.mark.timeout(120 + 8 * EXAMPLES)  # the slow profile's 300 runs outlast pytest-timeout's default 300 s
@settings(max_examples=EXAMPLES)
@given(plan=PLANS, interruptions=INTERRUPTIONS)
def test_generated_pipelines_resume_exactly_after_generated_interruptions(
    workdir: Path, results: Results, plan: list[tuple[str, int]], interruptions: list[tuple[str, int]]
) -> None:
    tmp = Path(tempfile.mkdtemp(dir=workdir))
    uri = f"file://{tmp}/ck"
    clean = Runtime(tmp / "clean")
    (tmp / "clean").mkdir()
    code, text, _ = clean.run(generated_args(plan, uri, tmp / "clean.out", 1, "clean"), env=GENERATED_ENV)
    assert code == 0, text

    rt = Runtime(tmp / "faulty")
    (tmp / "faulty").mkdir()
    attempt, finished, hits = 1, False, 0
    expected: dict[int, list[str] | None] = {}  # what each attempt's claim must keep (issue 10 item 7)
    for kind, n in interruptions:
        expected[attempt] = newest_completed(uri, "faulty")
        argv = generated_args(plan, uri, tmp / "faulty.out", attempt, "faulty")
        finished = interrupt_as_drawn(rt, argv, kind, n, tmp) is None
        event(f"{kind}: {'finished first' if finished else 'interrupted'}")
        hits += not finished
        attempt += 1
        if finished:
            break
    if not finished:
        expected[attempt] = newest_completed(uri, "faulty")
        code, text, _ = rt.run(generated_args(plan, uri, tmp / "faulty.out", attempt, "faulty"), env=GENERATED_ENV)
        assert code == 0, text
    problems = (
        []
        if (tmp / "faulty.out").read_text() == (tmp / "clean.out").read_text()
        else ["the resumed run's context differs from the clean run's"]
    )
    history = full_history(uri, "faulty")
    dups, regressed, why = reran_after_commit(rt.executions(), history)
    lost, why_lost = lost_in_history(history)
    fenced, why_fenced = fenced_writes(history)
    problems += why + why_lost + why_fenced + claims_disagree(history, expected)
    results.record(
        "Generated pipelines and interruptions (Hypothesis, file://)",
        runs=1,
        faults=hits,
        correct=int(not problems),
        lost=lost + regressed,
        duplicates=dups + fenced,
        test="test_generated_pipelines_resume_exactly_after_generated_interruptions",
        details=[f"plan {plan}, interruptions {interruptions}: {p}" for p in problems],
    )
    assert not problems, problems

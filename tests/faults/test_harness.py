"""The checker must be able to fail: feed it histories that lose, re-run and leak."""

from __future__ import annotations

from typing import Any

from tests.faults.harness import fenced_writes, lost_in_history, reran_after_commit


def commit(
    seq: int,
    attempt: int,
    kind: str,
    completed: list[str],
    step: str | None = None,
    progress: tuple[str, int] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "seq": seq,
        "attempt": attempt,
        "kind": kind,
        "completed_steps": completed,
        "step": step,
        "progress": None,
    }
    if progress:
        body["progress"] = {"step": progress[0], "state": {"json": {"i": progress[1]}}}
    return body


GOOD = [
    commit(1, 1, "claim", []),
    commit(2, 1, "step", ["a"], "a"),
    commit(3, 1, "progress", ["a"], "b", ("b", 4)),
    commit(4, 2, "claim", ["a"], None, ("b", 4)),
    commit(5, 2, "step", ["a", "b"], "b"),
]


def test_a_clean_history_passes() -> None:
    assert lost_in_history(GOOD)[0] == 0
    assert fenced_writes(GOOD)[0] == 0
    assert reran_after_commit([("a", 1, 0), ("b", 1, 0), ("b", 2, 4)], GOOD)[:2] == (0, 0)


def test_a_dropped_step_is_lost() -> None:
    bad = [*GOOD[:2], commit(3, 2, "claim", []), commit(4, 2, "step", ["a"], "a")]
    assert lost_in_history(bad)[0] == 1


def test_progress_going_back_is_lost() -> None:
    bad = [*GOOD[:3], commit(4, 2, "claim", ["a"], None, ("b", 2))]
    assert lost_in_history(bad)[0] == 1
    assert reran_after_commit([("b", 2, 0)], GOOD)[1] == 1


def test_a_committed_step_running_again_is_a_duplicate() -> None:
    assert reran_after_commit([("a", 1, 0), ("a", 2, 0)], GOOD)[0] == 1


def test_a_stale_commit_after_a_claim_is_a_duplicate() -> None:
    bad = [*GOOD, commit(6, 1, "step", ["a", "b", "c"], "c")]
    assert fenced_writes(bad)[0] == 1

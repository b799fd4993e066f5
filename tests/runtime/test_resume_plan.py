"""resume.plan and resume.progress_step: where an attempt starts, as a pure function.

The end-to-end behaviour (real runs, killed and resumed) is in test_definition_changes.py
and test_exact_resume.py; these pin each rule on its own, and draw definitions to check
that whatever is kept is a common, unchanged prefix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_runtime.commit import Commit, Entry, Stub
from pipeline_runtime.contracts import ResumePolicy
from pipeline_runtime.errors import IncompatibleCheckpoint
from pipeline_runtime.resume import FRESH, Wanted, plan, progress_step

STEPS = [["a", "1", "ca"], ["b", "1", "cb"], ["c", "1", "cc"]]


def definition(steps: list[list[str]] = STEPS, version: str = "1") -> dict[str, Any]:
    return {"pipeline": "p", "version": version, "steps": [list(s) for s in steps]}


def fp(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def wanted(d: dict[str, Any] | None = None, policy: ResumePolicy = ResumePolicy.COMPATIBLE, **kw: Any) -> Wanted:
    d = d or definition()
    fields: dict[str, Any] = {
        "pipeline": "p",
        "run_id": "r",
        "tenant": "t",
        "definition": d,
        "fingerprint": fp(d),
        "params_hash": "h",
        "policy": policy,
    }
    return Wanted(**{**fields, **kw})


def commit(done: list[str], d: dict[str, Any] | None = None, kind: str = "step", **extra: Any) -> Commit:
    d = d or definition()
    body = {
        "seq": 7,
        "kind": kind,
        "attempt": 2,
        "pipeline_name": "p",
        "run_guid": "r",
        "tenant": "t",
        "definition": d,
        "fingerprint": fp(d),
        "params_hash": "h",
        "completed_steps": done,
        "steps_summary": {},
        "context": {"dict": {}},
        "progress": None,
    }
    return Commit.model_validate({**body, **extra})


def test_nothing_to_resume_starts_over() -> None:
    assert plan(None, None, "file:///c", wanted(), True, None) == FRESH
    assert plan(commit(["a"]), None, "file:///c", wanted(), False, None) == FRESH  # resume off
    assert plan(commit(["a"]), None, "file:///c", wanted(policy=ResumePolicy.RESTART), True, None) == FRESH


def test_the_same_definition_keeps_every_completed_step() -> None:
    got = plan(commit(["a", "b"]), None, "file:///c", wanted(), True, None)
    assert got.keep == ["a", "b"] and got.same_commit and got.restart is None and not got.done


@pytest.mark.parametrize(
    ("latest", "error", "words"),
    [
        (None, "truncated JSON", "unreadable: truncated JSON"),
        (Stub(seq=4, tombstone=5), None, r"ends in a stub \(commit 4\)"),
        (commit(["a"], run_guid="other"), None, "run 'other'"),
        (commit(["a"], tenant="team-a"), None, "tenant 'team-a'"),
    ],
)
def test_checkpoints_that_cannot_be_resumed_are_refused_with_what_to_do(
    latest: Entry | None, error: str | None, words: str
) -> None:
    with pytest.raises(IncompatibleCheckpoint, match=words):
        plan(latest, error, "file:///c", wanted(), True, None)


def test_strict_refuses_a_changed_definition_and_names_the_change() -> None:
    new = definition([["a", "1", "ca"], ["b", "1", "CHANGED"], ["c", "1", "cc"]])
    with pytest.raises(IncompatibleCheckpoint, match="the code of step 'b' changed"):
        plan(commit(["a", "b"]), None, "file:///c", wanted(new, ResumePolicy.STRICT), True, None)


def test_compatible_keeps_the_unchanged_prefix_from_an_older_commit() -> None:
    new = definition([["a", "1", "ca"], ["b", "2", "cb"], ["c", "1", "cc"]])  # b's version bumped
    got = plan(commit(["a", "b", "c"]), None, "file:///c", wanted(new), True, None)
    assert got.keep == ["a"] and not got.same_commit


@pytest.mark.parametrize(
    ("change", "words"),
    [({"version": "2"}, "version changed from '1' to '2'"), ({"params_hash": "other"}, "the params")],
)
def test_compatible_starts_over_on_a_pipeline_version_or_params_change(change: dict[str, str], words: str) -> None:
    w = wanted(definition(version=change.get("version", "1")), params_hash=change.get("params_hash", "h"))
    got = plan(commit(["a", "b"]), None, "file:///c", w, True, None)
    assert got.keep is None and got.restart is not None and words in got.restart


def test_a_rerun_keeps_only_the_steps_before_it() -> None:
    got = plan(commit(["a", "b", "c"]), None, "file:///c", wanted(), True, "b")
    assert got.keep == ["a"] and not got.same_commit
    assert plan(commit(["a"]), None, "file:///c", wanted(), True, "c").keep == ["a"]  # not reached yet


def test_a_succeeded_tombstone_is_done_unless_a_rerun_asks_again() -> None:
    tomb = commit(["a", "b", "c"], kind="tombstone", outcome="Succeeded")
    assert plan(tomb, None, "file:///c", wanted(), True, None).done
    assert plan(tomb, None, "file:///c", wanted(), True, "b") == FRESH
    assert plan(tomb.model_copy(update={"outcome": "Failed"}), None, "file:///c", wanted(), True, None) == FRESH


def test_progress_goes_only_to_the_same_step_unchanged_and_not_rerun() -> None:
    saved = commit(["a"], progress={"step": "b", "state": {}})
    assert progress_step(saved, ["a"], wanted(), None) == "b"
    assert progress_step(saved, ["a"], wanted(), "b") is None  # the user asked to recompute b
    changed = definition([["a", "1", "ca"], ["b", "1", "CHANGED"], ["c", "1", "cc"]])
    assert progress_step(saved, ["a"], wanted(changed), None) is None
    assert progress_step(saved, [], wanted(), None) is None  # fewer steps kept than the commit holds
    assert progress_step(commit(["a"]), ["a"], wanted(), None) is None  # none saved


ENTRY = st.tuples(st.sampled_from("abcd"), st.sampled_from("12"), st.sampled_from(["x", "y"])).map(list)


@given(
    old=st.lists(ENTRY, min_size=1, max_size=4, unique_by=lambda e: e[0]),
    new=st.lists(ENTRY, min_size=1, max_size=4, unique_by=lambda e: e[0]),
    done=st.integers(0, 4),
    rerun=st.none() | st.sampled_from("abcd"),
)
def test_what_is_kept_is_an_unchanged_prefix_of_both_definitions(
    old: list[list[str]], new: list[list[str]], done: int, rerun: str | None
) -> None:
    stored = commit([e[0] for e in old][:done], definition(old))
    w = wanted(definition(new))
    names = [e[0] for e in new]
    if rerun is not None and rerun not in names:
        rerun = None  # the CLI refuses an unknown step before planning
    got = plan(stored, None, "file:///c", w, True, rerun)
    if got.keep is None:
        return
    keep = got.keep
    assert keep == stored.completed_steps[: len(keep)] and keep == names[: len(keep)]
    assert all(old[i] == new[i] for i in range(len(keep)))  # same name, version and code
    assert rerun is None or rerun not in keep
    assert got.same_commit == (keep == stored.completed_steps)

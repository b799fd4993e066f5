"""The one commit model (pipeline_runtime/commit.py): what is written reads back equal, and
whatever a slot holds reads back as a Commit, a Stub or CorruptCheckpoint, never a crash.

The end-to-end side (damaged logs met by real runs, `inspect` and `cleanup`) is in
tests/faults/test_bad_input_corpus.py; these check the model on its own, with drawn commits
and drawn damage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_runtime.commit import (
    Commit,
    CorruptCheckpoint,
    Kind,
    Progress,
    Stub,
    parse_commit,
    seal,
    seal_record,
    tombstone_of,
)

NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
COMMITS = st.builds(
    Commit,
    kind=st.sampled_from([k for k in Kind if k is not Kind.STUB]),
    attempt=st.integers(0, 2**40),
    pipeline_name=NAMES,
    run_guid=NAMES,
    tenant=st.none() | NAMES,
    completed_steps=st.lists(NAMES, max_size=4),
    step=st.none() | NAMES,
    steps_summary=st.none() | st.dictionaries(NAMES, st.dictionaries(st.text(max_size=4), JSON, max_size=2)),
    definition=st.none()
    | st.builds(lambda s: {"pipeline": "p", "version": "1", "steps": s}, st.lists(st.lists(NAMES, min_size=1))),
    progress=st.none() | st.builds(Progress, step=NAMES, state=st.builds(lambda v: {"json": v}, JSON)),
    context=st.builds(lambda d: {"dict": d}, st.dictionaries(NAMES, st.builds(lambda v: {"json": v}, JSON))),
    artifact_epoch=st.integers(0, 10**6),
    seq=st.integers(0, 10**9),
)


@given(COMMITS)
def test_a_sealed_commit_reads_back_equal_with_its_key_order(commit: Commit) -> None:
    data = seal(commit)
    back = parse_commit(data, "slot")
    assert back == commit
    assert seal(back) == data  # same bytes: key order of every nested dict kept
    assert list(json.loads(data)) == [*Commit.model_fields, "digest"]


def test_a_stub_reads_back_as_a_stub() -> None:
    stub = Stub(seq=3, tombstone=9)
    assert parse_commit(seal(stub), "slot") == stub


def _record(**change: Any) -> dict[str, Any]:
    commit = Commit(kind=Kind.STEP, attempt=1, pipeline_name="p", run_guid="r", completed_steps=["a"], steps_summary={})
    commit.context = {"dict": {}}
    return {**commit.record(), **change}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"attempt": "2"}, "attempt: Input should be a valid integer"),
        ({"attempt": True}, "attempt: Input should be a valid integer"),
        ({"kind": "stub"}, "lacks tombstone"),
        ({"kind": "done"}, "kind: Input should be"),
        ({"completed_steps": ["a", 3]}, "completed_steps.1"),
        ({"context": {"list": []}}, "context: Value error, should be a context node"),
        ({"definition": {"steps": "abc"}}, "definition: Value error, steps should be a list"),
        ({"artifact_epoch": -1}, "artifact_epoch: Input should be greater than or equal to 0"),
        ({"progress": {"step": "b"}}, "progress.state: Field required"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_a_sealed_commit_of_the_wrong_shape_is_damaged_and_says_which_field(change: dict[str, Any], words: str) -> None:
    with pytest.raises(CorruptCheckpoint, match=words):
        parse_commit(seal_record(_record(**change)), "slot 7")


def test_an_edit_after_sealing_is_caught_by_the_digest() -> None:
    data = seal_record(_record())
    with pytest.raises(CorruptCheckpoint, match="does not match its digest"):
        parse_commit(data.replace(b'"attempt":1', b'"attempt":2'), "slot 7")


@given(COMMITS, st.data())
def test_drawn_damage_is_a_corrupt_checkpoint_or_a_valid_commit_never_a_crash(
    commit: Commit, data: st.DataObject
) -> None:
    record = commit.record()
    key = data.draw(st.sampled_from(sorted(record)))
    record[key] = data.draw(JSON)
    try:
        back = parse_commit(seal_record(record), "slot")
    except CorruptCheckpoint:
        return
    assert isinstance(back, (Commit, Stub))


def test_a_tombstone_keeps_what_fences_and_drops_the_state() -> None:
    newest = Commit.model_validate(_record(attempt=4, progress={"step": "b", "state": {"json": 1}}, seq=12))
    tomb = tombstone_of(newest, outcome="Succeeded")
    assert (tomb.kind, tomb.attempt, tomb.completed_steps, tomb.outcome) == (Kind.TOMBSTONE, 4, ["a"], "Succeeded")
    assert tomb.context is None and tomb.progress is None
    assert parse_commit(seal(tomb), "slot") == tomb
    for unknown in (None, Stub(seq=3, tombstone=4)):
        assert tombstone_of(unknown, outcome="Deleted").attempt == 0

"""decide_parent driven round by round like Reconciler.reconcile_parent drives it, on generated
item lists, parallelism, maxFailedItems, child phases (with observedGeneration lagging),
list edits (add, remove, reorder, a duplicate, an empty list) and suspend toggles.

Every round checks the rules docs/fanout.md states: at most `parallelism` unfinished
children once new ones start, items started in list order, deterministic child names
of the documented form that fit a Job name, children only for current items, removed
items' children deleted, counts that add up and match the children, the phase rules
(Failed iff more than maxFailedItems failed, Succeeded only when every item finished
at its newest spec), failedItems indexing the current list.

Generated with Hypothesis (profiles in tests/conftest.py: `ci` bounded and derandomized).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from respawn_operator.fanout import (
    ANNOTATION_ITEM_INDEX,
    FAILED_ITEMS_SHOWN,
    FANOUT_FIELDS,
    LABEL_PARENT,
    LABEL_PARENT_UID,
    ParentDecision,
    child_spec,
    decide_parent,
)
from respawn_operator.job_builder import job_name
from respawn_operator.spec import DNS_SUBDOMAIN_PATTERN, parse_spec

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
PARAM = "video_uri"
PHASES = [None, "Pending", "Running", "Retrying", "Suspended", "Succeeded", "Failed"]
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Items as the CRD accepts them: strings of 1 to 4096 characters (any unicode), a few long.
ITEMS = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["a", "b", "gs://b/v1.mp4", "2026-01-01", " a", "a ", "ü", "日本", "\u200b"]),
    st.text(alphabet="xyz/", min_size=4000, max_size=4096),
)
DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
PARENT_NAMES = st.one_of(
    st.sampled_from(["clips", "a", "p" * 52, "p" * 53, "p" * 63, "p" * 253, "a.b-c." + "d" * 60]),
    st.lists(DNS_LABEL, min_size=1, max_size=12).map(".".join).filter(lambda n: len(n) <= 253),
)
CHILDREN = st.tuples(
    st.just("children"),
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(PHASES), st.booleans()), min_size=1, max_size=8),
)
ROUND = st.one_of(
    CHILDREN,
    CHILDREN,
    CHILDREN,
    st.tuples(st.just("add"), st.integers(0, 10**6), ITEMS),
    st.tuples(st.just("remove"), st.integers(0, 10**6)),
    st.tuples(st.just("reorder"), st.randoms(use_true_random=False)),
    st.tuples(st.just("duplicate"), st.integers(0, 10**6)),
    st.tuples(st.just("empty")),
    st.tuples(st.just("suspend")),
    st.tuples(st.just("params"), st.sampled_from(["grid", "scene", "$(item.key)"])),
)


def expected_name(parent: str, item: str) -> str:
    """The documented form: `<parent>-<first 10 hex of sha256(item)>`, shortened to 63."""
    key = hashlib.sha256(json.dumps(item, ensure_ascii=False).encode()).hexdigest()[:10]
    if len(parent) + 11 <= 63:
        return f"{parent}-{key}"
    digest = hashlib.sha256(parent.encode()).hexdigest()[:8]
    return f"{parent[: 63 - 11 - 9].rstrip('-.')}-{digest}-{key}"


def settled(c: dict[str, Any], desired: dict[str, Any]) -> bool:
    st_ = c.get("status") or {}
    return c["spec"] == desired and int(st_.get("observedGeneration") or 0) >= int(c["metadata"]["generation"])


def finished(c: dict[str, Any], desired: dict[str, Any]) -> str | None:
    """Succeeded/Failed if the child's phase counts (its reconcile saw its newest spec)."""
    phase = (c.get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") and settled(c, desired) else None


def first_repeat(items: list[str]) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item in seen:
            return i, seen[item]
        seen[item] = i
    return None


class World:
    """A parent and its children as the API would hold them between rounds."""

    def __init__(self, name: str, items: list[str], parallelism: int | None, max_failed: int | None) -> None:
        spec: dict[str, Any] = {
            "pipeline": "dataprep",
            "params": {"mode": "grid"},
            "foreach": {"param": PARAM, "items": items},
        }
        if parallelism is not None:
            spec["parallelism"] = parallelism
        if max_failed is not None:
            spec["maxFailedItems"] = max_failed
        self.parent: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": "u-1",
                "generation": 1,
                "labels": {"team": "vision", "app.kubernetes.io/instance": "x", "argocd.argoproj.io/y": "z"},
            },
            "spec": spec,
        }
        self.children: dict[str, dict[str, Any]] = {}
        self.ever: dict[str, str] = {}
        """Every child name ever created -> its item (a name always means one item)."""

    @property
    def items(self) -> list[str]:
        items: list[str] = self.parent["spec"]["foreach"]["items"]
        return items

    def edit_spec(self, change: Any) -> None:
        change(self.parent["spec"])
        self.parent["metadata"]["generation"] += 1

    def apply(self, step: tuple[Any, ...]) -> None:
        kind, items = step[0], list(self.items)
        if kind == "children":
            names = sorted(self.children)
            for pick, phase, lag in step[1]:
                if not names:
                    break
                c = self.children[names[pick % len(names)]]
                gen = c["metadata"]["generation"]
                # the child's own reconcile: it reports a phase at its generation, or lags one behind
                c["status"] = {
                    "phase": phase,
                    "observedGeneration": gen - 1 if lag else gen,
                    "preemptions": pick % 3,
                    "failures": pick % 2,
                    **({"message": f"boom {pick}"} if phase == "Failed" else {}),
                }
            return
        if kind == "add":
            items.insert(step[1] % (len(items) + 1), step[2])
        elif kind == "remove" and items:
            items.pop(step[1] % len(items))
        elif kind == "reorder":
            step[1].shuffle(items)
        elif kind == "duplicate" and items:
            items.insert(step[1] % (len(items) + 1), items[step[1] % len(items)])
        elif kind == "empty":
            items = []
        elif kind == "suspend":
            self.edit_spec(lambda s: s.__setitem__("suspend", not s.get("suspend", False)))
            return
        elif kind == "params":
            self.edit_spec(lambda s: s.__setitem__("params", {"mode": step[1]}))
            return
        if items != self.items:
            self.edit_spec(lambda s: s["foreach"].__setitem__("items", items))

    def round(self) -> None:
        """One reconcile_parent: decide, check, then create/patch/delete and write the status."""
        body, children = self.parent, list(self.children.values())
        spec = parse_spec(body["spec"])
        assert spec.foreach is not None
        d = decide_parent(body, spec, spec.foreach.items, None, children, NOW)
        check(self, d)
        assert d.status.phase is not None and d.status.items is not None  # a parent's status always has both
        event(f"phase {d.status.phase.value}")  # what the generated rounds reach (--hypothesis-show-statistics)
        if d.create and len(d.create) < d.status.items.pending:
            event("creation held back by parallelism")
        for c in d.create:
            c = json.loads(json.dumps(c))
            c["metadata"]["generation"] = 1
            self.children[c["metadata"]["name"]] = c
            self.ever[c["metadata"]["name"]] = c["spec"]["params"][PARAM]
        for name, new in d.update:
            self.children[name]["spec"] = new
            self.children[name]["metadata"]["generation"] += 1  # the API bumps it on a spec change
        for name in d.delete:
            del self.children[name]
        prev_phase = (body.get("status") or {}).get("phase")
        body["status"] = d.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        reasons = [r for _, r, _ in d.events]
        if body["status"]["phase"] == "Failed" and prev_phase != "Failed":
            assert {"ItemsFailed", "InvalidItems"} & set(reasons), d.events
        if prev_phase == "Succeeded" and body["status"]["phase"] == "Succeeded":
            assert "Succeeded" not in reasons  # one event per finish


def check(w: World, d: ParentDecision) -> None:
    body, items, raw = w.parent, w.items, w.parent["spec"]
    name, gen = body["metadata"]["name"], body["metadata"]["generation"]
    st_ = d.status
    limit = raw.get("maxFailedItems", 0)
    parallelism = raw.get("parallelism", 10)
    assert st_.observed_generation == gen
    assert st_.items is not None and st_.items.total == len(items)
    assert st_.phase is not None
    repeat = first_repeat(items)
    if not items or repeat:
        problem = (
            f"foreach item {repeat[0]} repeats item {repeat[1]}" if repeat else "foreach: the list of items is empty"
        )
        assert st_.phase.value == "Failed" and (st_.message or "").startswith(problem), st_.message
        assert not d.create and not d.update and not d.delete  # nothing changes on invalid items
        return
    wanted = {expected_name(name, item): (i, item) for i, item in enumerate(items)}
    assert len(wanted) == len(items), "two items, one child name"
    for child, (_, item) in wanted.items():
        assert len(child) <= 63 and re.match(DNS_SUBDOMAIN_PATTERN, child), child
        assert len(job_name(child, 99)) <= 63
        assert w.ever.get(child, item) == item, "a name always means one item"
    have = w.children
    # Children only for current items; removed items' children deleted, the rest kept.
    assert d.delete == sorted(set(have) - set(wanted))
    assert {n for n, _ in d.update} <= set(have) & set(wanted)
    created = [c["metadata"]["name"] for c in d.create]
    assert len(set(created)) == len(created) and not set(created) & set(have)
    assert set(created) <= set(wanted)
    for c in d.create:
        n = c["metadata"]["name"]
        i, item = wanted[n]
        assert c["metadata"]["annotations"][ANNOTATION_ITEM_INDEX] == str(i)
        assert c["spec"] == child_spec(raw, PARAM, item) and c["spec"]["params"][PARAM] == item
        assert not set(FANOUT_FIELDS) & set(c["spec"])
        assert c["metadata"]["labels"][LABEL_PARENT_UID] == "u-1"
        assert len(c["metadata"]["labels"][LABEL_PARENT]) <= 63 and LABEL_VALUE.match(
            c["metadata"]["labels"][LABEL_PARENT]
        )
        assert c["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # Counts, from the children fed in.
    desired = {n: child_spec(raw, PARAM, item) for n, (_, item) in wanted.items()}
    mine = {n: have[n] for n in wanted if n in have}
    succeeded = [n for n, c in mine.items() if finished(c, desired[n]) == "Succeeded"]
    failed = sorted((wanted[n][0], n) for n, c in mine.items() if finished(c, desired[n]) == "Failed")
    running = [
        n
        for n, c in mine.items()
        if not finished(c, desired[n]) and (c.get("status") or {}).get("phase") in ("Running", "Retrying")
    ]
    counts = st_.items
    assert (counts.succeeded, counts.failed, counts.running) == (len(succeeded), len(failed), len(running))
    assert counts.pending + counts.running + counts.succeeded + counts.failed == counts.total
    assert counts.pending == len(items) - len(succeeded) - len(failed) - len(running)
    assert counts.progress == f"{counts.succeeded}/{counts.total}"
    assert [(f.index, f.name) for f in counts.failed_items] == failed[:FAILED_ITEMS_SHOWN]
    for f in counts.failed_items:  # an index of the current list
        assert expected_name(name, items[f.index]) == f.name
    assert st_.preemptions == sum(int((c.get("status") or {}).get("preemptions") or 0) for c in mine.values())
    # Parallelism and list order: new children only while fewer than `parallelism` are unfinished,
    # the first not-started items of the current list.
    unfinished = len(mine) - len(succeeded) - len(failed)
    if d.create:
        assert unfinished + len(d.create) <= parallelism
    not_started = [n for n in sorted(wanted, key=lambda n: wanted[n][0]) if n not in have]
    if len(failed) > limit or raw.get("suspend"):
        assert not d.create
    else:
        assert created == not_started[: max(0, parallelism - unfinished)]
    # Phase.
    phase = st_.phase.value
    assert (phase == "Failed") == (len(failed) > limit), (phase, failed, limit)
    all_done = len(succeeded) + len(failed) == len(items)
    if phase == "Succeeded":
        assert all_done and not d.create and not d.update and d.requeue_after is None
        assert all(settled(have[n], desired[n]) for n in wanted)
    elif phase != "Failed":
        assert not (all_done and not d.update), "every item finished at its spec, yet not Succeeded"
        if raw.get("suspend"):
            assert phase == "Suspended"
        else:
            assert phase == ("Running" if running or succeeded or failed else "Pending")


@pytest.mark.slow
@given(
    name=PARENT_NAMES,
    items=st.lists(ITEMS, min_size=1, max_size=25, unique=True),
    parallelism=st.one_of(st.none(), st.integers(1, 8)),
    max_failed=st.one_of(st.none(), st.integers(0, 4)),
    rounds=st.lists(ROUND, min_size=1, max_size=30),
)
def test_decide_parent_keeps_the_documented_rules_round_by_round(
    name: str, items: list[str], parallelism: int | None, max_failed: int | None, rounds: list[tuple[Any, ...]]
) -> None:
    w = World(name, items, parallelism, max_failed)
    w.round()
    for step in rounds:
        w.apply(step)
        w.round()
    # Then every child reports Succeeded at its newest spec, round after round: the parent
    # starts the rest in order and ends Succeeded (or Failed, if invalid or over budget).
    if w.parent["spec"].get("suspend"):
        w.apply(("suspend",))
    for _ in range(len(w.items) + 2):
        for c in w.children.values():
            if (c.get("status") or {}).get("phase") != "Failed" or not settled(c, c["spec"]):
                c["status"] = {"phase": "Succeeded", "observedGeneration": c["metadata"]["generation"]}
        w.round()
    phase = w.parent["status"]["phase"]
    failed = w.parent["status"]["items"].get("failed", 0)
    invalid = not w.items or first_repeat(w.items)
    assert phase == ("Failed" if invalid or failed > (max_failed or 0) else "Succeeded"), w.parent["status"]

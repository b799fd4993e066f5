"""Fan-out: a PipelineRun with `spec.foreach` runs its pipeline once per item, as child runs.

A parent starts no Job of its own. :func:`decide_parent` is a pure function of the
parent, its items and its children, like :func:`respawn_operator.reconcile.decide`:

* Each item is a child PipelineRun: an ordinary run with its own attempts, budgets,
  fencing, checkpoint and retain; its spec is the parent's without the fan-out fields,
  with `params[foreach.param]` set to the item. It is owned by the parent (deleting the
  parent deletes the children, each cleaning its checkpoint per its retain) and
  labelled with it.
* A child is named from the parent and a hash of its item, not its position: editing
  the list in Git keeps the children of unchanged items (and their results), creates
  the new ones, and deletes the removed ones. Duplicate items are refused.
* At most `parallelism` children are unfinished at once; items start in list order.
* Changes to the parent's spec (params, image, suspend, rerunFrom, ...) are written to
  every child, whose own convergence does the rest.
* The parent is Running while items are, Succeeded when every item succeeded, and
  Failed once more than `maxFailedItems` items failed (no new item starts then).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from respawn_operator import GROUP, VERSION
from respawn_operator.job_builder import short_name
from respawn_operator.reconcile import set_condition
from respawn_operator.spec import (
    ITEMS_MAX,
    PARAMS_MAX_BYTES,
    ConditionType,
    FailedItem,
    ItemsStatus,
    Phase,
    PipelineRunSpec,
    PipelineRunStatus,
    params_size,
    parse_status,
)
from respawn_operator.timeutil import fmt

LABEL_PARENT = "respawn.dev/parent"
"""On a child: the parent's name (shortened to fit a label)."""
LABEL_PARENT_UID = "respawn.dev/parent-uid"
"""On a child: the parent's uid, what the operator lists children by."""
ANNOTATION_ITEM_INDEX = "respawn.dev/item-index"
"""On a child: the item's position in the parent's list, for people and `describe`."""
FANOUT_FIELDS = ("foreach", "parallelism", "maxFailedItems")
NOT_INHERITED_LABELS = ("respawn.dev/", "app.kubernetes.io/instance", "argocd.argoproj.io/")
"""Parent labels a child does not get: ours, and the ones GitOps tools track their objects
by (Argo CD's default tracking label): a child carrying them would look like an object of
the Application that is missing from Git, and be pruned."""
"""Spec fields of the parent that children do not get."""
DEFAULT_PARALLELISM = 10
FAILED_ITEMS_SHOWN = 20
REQUEUE_SECONDS = 30.0
"""A parent is poked by its children's events; this is a safety net."""


def item_key(item: Any) -> str:
    """A short, stable hash of an item's value (canonical JSON)."""
    text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def child_name(parent: str, item: Any) -> str:
    """``<parent>-<hash of the item>``, shortened deterministically to fit a label and a Job name."""
    return short_name(parent, f"-{item_key(item)}")


def parse_items(text: str) -> list[str]:
    """Items from a ConfigMap value: one per line, surrounding blanks and empty lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


ITEM_KEY_VARIABLE = "$(item.key)"
"""In a string param of the parent: replaced by the item's key in each child, so items that
write somewhere get a place of their own (``output_uri: gs://b/out/$(item.key)``)."""


def _expand(value: Any, key: str) -> Any:
    if isinstance(value, str):
        return value.replace(ITEM_KEY_VARIABLE, key)
    if isinstance(value, list):
        return [_expand(v, key) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, key) for k, v in value.items()}
    return value


def child_spec(parent_spec: dict[str, Any], param: str, item: Any) -> dict[str, Any]:
    """The child's spec: the parent's as written, without the fan-out fields, with the item
    set and `$(item.key)` in params expanded."""
    spec = {k: copy.deepcopy(v) for k, v in parent_spec.items() if k not in FANOUT_FIELDS}
    spec["params"] = {**_expand(spec.get("params") or {}, item_key(item)), param: copy.deepcopy(item)}
    return spec


def check_items(spec: PipelineRunSpec, raw_spec: dict[str, Any], items: list[Any]) -> str | None:
    """What is wrong with the items (by index), or None: checked before any child starts."""
    assert spec.foreach is not None
    if not items:
        return "foreach: the list of items is empty"
    if len(items) > ITEMS_MAX:  # the CRD caps inline items; a ConfigMap's lines need this check
        return f"foreach: {len(items)} items, above the {ITEMS_MAX} one run may have (each is a PipelineRun)"
    seen: dict[str, int] = {}
    base = dict(raw_spec.get("params") or {})
    for i, item in enumerate(items):
        if item is None:
            return f"foreach item {i}: null is not an item"
        key = item_key(item)
        if key in seen:
            return f"foreach item {i} repeats item {seen[key]}: each item must be different (it names a child run)"
        seen[key] = i
        size = params_size({**base, spec.foreach.param: item})
        if size > PARAMS_MAX_BYTES:
            return (
                f"foreach item {i}: its params are {size // 1024} KiB as compact JSON, above the "
                f"{PARAMS_MAX_BYTES // 1024} KiB a pod's environment can carry; pass a URI instead"
            )
    return None


@dataclasses.dataclass
class ParentDecision:
    status: PipelineRunStatus
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Child PipelineRuns to create, in item order."""
    update: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    """(child name, its new spec): the parent's spec changed."""
    delete: list[str] = dataclasses.field(default_factory=list)
    """Children whose item is no longer in the list."""
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    """(type, reason, message)."""
    requeue_after: float | None = REQUEUE_SECONDS


def _child_body(parent: dict[str, Any], spec: dict[str, Any], name: str, index: int) -> dict[str, Any]:
    meta = parent["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PipelineRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                **{k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith(NOT_INHERITED_LABELS)},
                LABEL_PARENT: short_name(meta["name"]),
                LABEL_PARENT_UID: meta["uid"],
            },
            "annotations": {ANNOTATION_ITEM_INDEX: str(index)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "PipelineRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _end(d: ParentDecision, phase: Phase, event: tuple[str, str, str], gen: int, now: dt.datetime) -> None:
    """The parent finished (Succeeded or Failed): phase, message, conditions, one event."""
    st, (_, reason, message) = d.status, event
    if st.phase is not phase:
        d.events.append(event)
        st.completion_time = fmt(now)
    st.phase, st.message = phase, message
    truth = "True" if phase is Phase.SUCCEEDED else "False"
    set_condition(st, ConditionType.SUCCEEDED, truth, reason, message, gen, now)
    set_condition(st, ConditionType.READY, truth, reason, message, gen, now)


def decide_parent(
    body: dict[str, Any],
    spec: PipelineRunSpec,
    items: list[Any] | None,
    items_error: str | None,
    children: list[dict[str, Any]],
    now: dt.datetime,
) -> ParentDecision:
    """The next step for a fan-out parent (see the module docstring)."""
    assert spec.foreach is not None
    meta = body["metadata"]
    gen = int(meta.get("generation") or 1)
    at = fmt(now)
    prev = parse_status(body.get("status"))  # lenient: a status an older operator wrote never breaks the round
    st = PipelineRunStatus(
        phase=prev.phase,
        message=prev.message,
        conditions=prev.conditions,
        start_time=prev.start_time,
        completion_time=prev.completion_time,
    )
    st.observed_generation = gen
    st.start_time = st.start_time or at
    d = ParentDecision(status=st)
    raw_spec = body.get("spec") or {}
    problem = items_error or (check_items(spec, raw_spec, items) if items is not None else "foreach: no items")
    if problem is not None:
        if st.phase is not Phase.FAILED or st.message != problem:
            d.events.append(("Warning", "InvalidItems", problem))
        st.phase, st.message = Phase.FAILED, problem
        set_condition(st, ConditionType.SUCCEEDED, "False", "InvalidItems", problem, gen, now)
        set_condition(st, ConditionType.READY, "False", "InvalidItems", problem, gen, now)
        st.items = ItemsStatus(total=len(items or []), progress=f"0/{len(items or [])}")
        return d
    assert items is not None
    wanted = {child_name(meta["name"], item): (i, item) for i, item in enumerate(items)}
    have = {c["metadata"]["name"]: c for c in children}
    counts = ItemsStatus(total=len(items))
    preemptions = failures = 0
    unfinished = 0
    failed_items: list[FailedItem] = []
    for name, (i, item) in sorted(wanted.items(), key=lambda kv: kv[1][0]):
        child = have.get(name)
        if child is None:
            counts.pending += 1
            continue
        desired = child_spec(raw_spec, spec.foreach.param, item)
        updating = (child.get("spec") or {}) != desired
        if updating:
            d.update.append((name, desired))
        cst = child.get("status") or {}
        phase = cst.get("phase")
        preemptions += int(cst.get("preemptions") or 0)
        failures += int(cst.get("failures") or 0)
        # A child's phase counts once its operator has seen its newest spec: after an update
        # its old Succeeded says nothing yet (the parent must not look done for a moment).
        settled = not updating and int(cst.get("observedGeneration") or 0) >= int(
            (child.get("metadata") or {}).get("generation") or 1
        )
        if phase == Phase.SUCCEEDED.value and settled:
            counts.succeeded += 1
        elif phase == Phase.FAILED.value and settled:
            counts.failed += 1
            failed_items.append(FailedItem(index=i, name=name, message=cst.get("message")))
        elif phase in (Phase.RUNNING.value, Phase.RETRYING.value):
            counts.running += 1
            unfinished += 1
        else:
            counts.pending += 1
            unfinished += 1
    d.delete = sorted(set(have) - set(wanted))
    counts.progress = f"{counts.succeeded}/{counts.total}"
    counts.failed_items = failed_items[:FAILED_ITEMS_SHOWN]
    st.items, st.preemptions, st.failures = counts, preemptions, failures
    limit = spec.max_failed_items or 0
    parallelism = spec.parallelism or DEFAULT_PARALLELISM
    if counts.failed > limit:
        message = (
            f"{counts.failed} of {counts.total} items failed (maxFailedItems {limit}); "
            f"first: item {failed_items[0].index} ({failed_items[0].name}): {failed_items[0].message}"
        )
        _end(d, Phase.FAILED, ("Warning", "ItemsFailed", message), gen, now)
        return d
    if not spec.suspend:
        for name, (i, item) in sorted(wanted.items(), key=lambda kv: kv[1][0]):
            if unfinished >= parallelism:
                break
            if name not in have:
                d.create.append(_child_body(body, child_spec(raw_spec, spec.foreach.param, item), name, i))
                unfinished += 1
        if d.create and not children:
            d.events.append(("Normal", "ItemsStarted", f"{len(items)} items, {parallelism} at a time"))
    done = counts.succeeded + counts.failed
    if done == counts.total and not d.create and not d.update:
        message = (
            f"{counts.succeeded} of {counts.total} items succeeded, {counts.failed} failed (within maxFailedItems {limit})"
            if counts.failed
            else f"all {counts.total} items succeeded"
        )
        _end(d, Phase.SUCCEEDED, ("Normal", "Succeeded", message), gen, now)
        d.requeue_after = None
        return d
    st.completion_time = None
    if spec.suspend:
        st.phase = Phase.SUSPENDED
        st.message = f"suspended: {counts.running} items stopping or stopped, {counts.pending} not started"
        reason = "Suspended"
    else:
        st.phase = Phase.RUNNING if counts.running or counts.succeeded or counts.failed else Phase.PENDING
        st.message = f"{counts.succeeded}/{counts.total} items done, {counts.running} running, {counts.failed} failed"
        reason = "ItemsRunning"
    set_condition(st, ConditionType.SUCCEEDED, "Unknown", reason, st.message, gen, now)
    set_condition(st, ConditionType.READY, "False", reason, st.message, gen, now)
    return d

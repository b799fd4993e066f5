"""Judging a finished run: its context, its files and its commit history.

A resumed run is right when it ends with exactly the context of a clean run (every
value's type, dtype with byte order, shape and bytes, and the key order), the same
files, and a history in which two things never happen:

* lost: a later commit that does not carry what an earlier one had landed (completed
  steps that went missing, saved intra-step progress that went backwards);
* duplicates: a step that started again in an attempt although an earlier attempt's
  commit of it had landed, or a commit by an attempt older than one that had already
  claimed the run (a fenced writer getting through).

The fault suite in tests/faults and `pipeline-runtime chaos` both judge with this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import Commit, Kind, RunLog
from ..storage import open_store


def describe_value(value: Any) -> str:
    """Type, dtype with byte order, shape and a hash of the bytes (or the repr) of a value;
    dicts in their key order. Two values describe alike exactly when resume kept them."""
    import numpy as np

    if isinstance(value, (np.ndarray, np.generic)):
        return (
            f"{type(value).__name__}:{value.dtype.str}:{np.shape(value)}:"
            f"{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]}"
        )
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{describe_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ",".join(describe_value(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__}:{len(value)}:{hashlib.sha256(value).hexdigest()[:16]}"
    return f"{type(value).__name__}:{value!r}"


def describe_tree(value: Any) -> Any:
    """Like describe_value, but dicts, lists and tuples stay nested (as JSON: a dict is a
    list of [key, description] pairs, so its key order counts), so a difference can be
    pointed at: see first_difference."""
    if isinstance(value, dict):
        return {"dict": [[k, describe_tree(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [describe_tree(v) for v in value]}
    return describe_value(value)


def first_difference(want: Any, got: Any, path: str = "") -> tuple[str, str] | None:
    """(where inside the value, what differs) for two describe_tree results, or None."""
    if want == got:
        return None
    if isinstance(want, dict) and isinstance(got, dict) and want.keys() == got.keys():
        kind = next(iter(want))
        a, b = want[kind], got[kind]
        if kind == "dict":
            keys_a, keys_b = [k for k, _ in a], [k for k, _ in b]
            if keys_a != keys_b:
                return path, f"keys {keys_a} became {keys_b}"
            for (k, va), (_, vb) in zip(a, b):
                found = first_difference(va, vb, f"{path}[{k!r}]")
                if found:
                    return found
        elif len(a) != len(b):
            return path, f"{kind} of {len(a)} items became {len(b)}"
        else:
            for i, (va, vb) in enumerate(zip(a, b)):
                found = first_difference(va, vb, f"{path}[{i}]")
                if found:
                    return found
    if isinstance(want, str) and isinstance(got, str):
        return path, what_differs(want, got)
    return path, "another kind of value"


def what_differs(want: str, got: str) -> str:
    """A phrase for the first difference between two descriptions of one value."""
    w, g = want.split(":"), got.split(":")
    if w[0] != g[0]:
        return f"type {w[0]} became {g[0]}"
    if w[0] in ("ndarray", "float16", "float32", "float64") or len(w) == 4 == len(g):
        for label, a, b in zip(("type", "dtype", "shape", "bytes"), w, g):
            if a != b:
                return f"{label} {a} became {b}" if label != "bytes" else "same dtype and shape, other values"
    if len(want) < 80 and len(got) < 80:
        return f"{want} became {got}"
    return "other contents"


def history(uri: str, run_id: str, tenant: str = "default") -> list[dict[str, Any]]:
    """Every commit of a run as its JSON record (progress states included); unreadable ones
    as {seq, error}. The checks below read records, so they also judge `inspect --json`."""
    return [entry.record() for entry in RunLog(open_store(uri), tenant, run_id).history()]


def final_context(uri: str, run_id: str, tenant: str = "default") -> dict[str, Any]:
    """The context of a run's newest readable commit, decoded exactly as a resume would."""
    from ..codec import decode

    runlog = RunLog(open_store(uri), tenant, run_id)
    latest = runlog.latest()
    if latest is None or not isinstance(latest.body, Commit) or latest.body.context is None:
        raise FileNotFoundError(f"no readable commit with a context at {runlog.uri}")
    body = latest.body
    return dict(decode(body.context, runlog.get_artifact, epoch=body.artifact_epoch, get_into=runlog.artifact_reader))


def describe_context(context: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, describe_tree of its value) in the context's own key order."""
    return [(k, describe_tree(v)) for k, v in context.items()]


def step_commits(history: list[dict[str, Any]]) -> dict[str, int]:
    """step -> the attempt whose commit of it landed first."""
    found: dict[str, int] = {}
    for h in history:
        if h.get("kind") == Kind.STEP and isinstance(h.get("step"), str):
            found.setdefault(h["step"], h["attempt"])
    return found


def progress_index(body: dict[str, Any]) -> tuple[str, int] | None:
    """(step, i) of a commit's saved intra-step progress, for steps that save {"i": ...}."""
    progress = body.get("progress")
    if not progress:
        return None
    node = progress["state"]
    if "json" in node and isinstance(node["json"], dict) and "i" in node["json"]:
        return progress["step"], int(node["json"]["i"])
    if "dict" in node and "i" in node["dict"] and "json" in node["dict"]["i"]:
        return progress["step"], int(node["dict"]["i"]["json"])
    return None


def lost_in_history(history: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Committed steps or progress that a later commit dropped."""
    lost, problems = 0, []
    prev: dict[str, Any] | None = None
    for body in history:
        if "error" in body or body.get("kind") in (Kind.STUB, Kind.TOMBSTONE):
            continue
        if prev is not None:
            before, now = prev["completed_steps"], body["completed_steps"]
            common = 0
            while common < min(len(before), len(now)) and before[common] == now[common]:
                common += 1
            if common < len(before):
                lost += len(before) - common
                problems.append(f"commit {body['seq']} dropped committed steps {before[common:]}")
            was, is_ = progress_index(prev), progress_index(body)
            if was and now == before and (is_ is None or is_[0] != was[0] or is_[1] < was[1]):
                lost += 1
                problems.append(f"commit {body['seq']} lost progress {was} (has {is_})")
        prev = body
    return lost, problems


def fenced_writes(history: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Commits by an attempt older than one that had already claimed the run."""
    bad, problems, highest = 0, [], 0
    for body in history:
        attempt = body.get("attempt")
        if not isinstance(attempt, int) or body.get("kind") == Kind.STUB:
            continue
        if attempt < highest:
            bad += 1
            problems.append(f"commit {body['seq']} by attempt {attempt} after attempt {highest} claimed the run")
        highest = max(highest, attempt)
    return bad, problems


def reran_after_commit(
    executions: list[tuple[str, int, int]], history: list[dict[str, Any]]
) -> tuple[int, int, list[str]]:
    """(duplicates, lost, problems) from step starts (step, attempt, start index): a step that
    started in an attempt later than the one whose commit of it landed; and a resumed step
    that started before the progress its attempt's claim carried."""
    committed = step_commits([h for h in history if "error" not in h])
    dups, lost, problems = 0, 0, []
    for name, attempt, _ in executions:
        first = committed.get(name)
        if first is not None and first < attempt:
            dups += 1
            problems.append(f"step {name} ran in attempt {attempt} although attempt {first} had committed it")
    claims = {h["attempt"]: h for h in history if h.get("kind") == Kind.CLAIM}
    for name, attempt, start in executions:
        claim = claims.get(attempt)
        saved = progress_index(claim) if claim else None
        if saved and saved[0] == name and start < saved[1]:
            lost += 1
            problems.append(
                f"step {name} resumed at {start} in attempt {attempt}, but progress {saved[1]} was committed"
            )
    return dups, lost, problems


@dataclass
class HistoryVerdict:
    lost: int
    duplicates: int
    problems: list[str]


def judge_history(history: list[dict[str, Any]], executions: list[tuple[str, int, int]]) -> HistoryVerdict:
    """All history checks at once."""
    lost, why_lost = lost_in_history(history)
    fenced, why_fenced = fenced_writes(history)
    reran, regressed, why_reran = reran_after_commit(executions, history)
    return HistoryVerdict(lost + regressed, fenced + reran, why_lost + why_fenced + why_reran)


def writers(history: list[dict[str, Any]]) -> dict[str, list[str]]:
    """key -> the steps that set or changed it, in a clean run's step commits."""
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for body in history:
        if body.get("kind") != Kind.STEP or not isinstance(body.get("context"), dict):
            continue
        context = body["context"]
        # A context of plain JSON is stored whole as {"json": {...}}; otherwise key by key.
        nodes = context.get("dict") or (
            {k: {"json": v} for k, v in context["json"].items()} if isinstance(context.get("json"), dict) else {}
        )
        for key, node in nodes.items():
            text = json.dumps(node, sort_keys=True)
            if seen.get(key) != text:
                seen[key] = text
                out.setdefault(key, []).append(body["step"])
    return out


def step_windows(history: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(step, started, ended) of a clean run, from the times its commits were made."""
    out, start = [], None
    for body in history:
        at = _seconds(body.get("at"))
        if at is None:
            continue
        if body.get("kind") == Kind.CLAIM:
            start = at
        elif body.get("kind") == Kind.STEP and start is not None:
            out.append((body["step"], start, at))
            start = at
    return out


def _seconds(at: Any) -> float | None:
    if not isinstance(at, str):
        return None
    try:
        return dt.datetime.fromisoformat(at).timestamp()  # 3.11 reads the trailing Z
    except ValueError:
        return None


def file_digests(folder: Path) -> dict[str, tuple[str, int, float]]:
    """relative path -> (xxh3-128 digest, size, mtime) of every file under `folder`.
    Only runs of one session are compared, no adversary: a 20x faster hash than
    sha256 keeps judging a case with a large output cheap."""
    import xxhash

    out: dict[str, tuple[str, int, float]] = {}
    if not folder.is_dir():
        return out
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            digest = xxhash.xxh3_128()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            stat = path.stat()
            out[str(path.relative_to(folder))] = (digest.hexdigest(), stat.st_size, stat.st_mtime)
    return out


def file_writer(mtime: float, windows: list[tuple[str, float, float]]) -> str | None:
    """The step during which a clean run last wrote a file (by its modification time)."""
    # The windows follow each other: the file was written in the last one begun by then
    # (commit times have millisecond resolution).
    found = None
    for name, start, end in windows:
        if start <= mtime + 0.001:
            found = name if mtime <= end + 0.5 else None
    return found

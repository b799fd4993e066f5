"""Where a new attempt starts: a pure function of the newest commit and this run's definition.

`plan` reads nothing and writes nothing: it says whether to start over, to take a
finished run as done, or to keep a list of completed steps (and whether that needs an
older commit than the newest, when a changed definition or a rerun keeps fewer steps).
`_Run.base_state` (pipeline.py) does the reading: it finds that commit and decodes it.
Every refusal is an `IncompatibleCheckpoint` whose message says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checkpoint import Commit, Entry, Kind, Stub
from .contracts import ResumePolicy
from .errors import IncompatibleCheckpoint


@dataclass(frozen=True)
class Wanted:
    """This run as its code defines it now."""

    pipeline: str
    run_id: str
    tenant: str
    definition: dict[str, Any]
    fingerprint: str
    params_hash: str
    policy: ResumePolicy

    @property
    def names(self) -> list[str]:
        return [entry[0] for entry in self.definition["steps"]]


@dataclass(frozen=True)
class Plan:
    keep: list[str] | None
    """The completed steps to keep; None: start over."""
    restart: str | None = None
    """Why a checkpoint that was there is not used (the `restart` event), if it was not."""
    done: bool = False
    """The run already succeeded with this definition (a tombstone): nothing to do."""
    same_commit: bool = True
    """The newest commit holds exactly `keep`; False: the newest commit holding `keep` must be found."""


FRESH = Plan(keep=None)


def plan(
    latest: Entry | None, error: str | None, where: str, wanted: Wanted, resume: bool, rerun_from: str | None
) -> Plan:
    """``latest``: the newest commit (None: no commit, or unreadable with ``error``)."""
    if not resume or wanted.policy is ResumePolicy.RESTART or (latest is None and error is None):
        return FRESH
    if latest is None:
        raise IncompatibleCheckpoint(
            f"checkpoint at {where} is unreadable: {error}. Use resume policy "
            "Restart to start over (history is kept), or inspect it with "
            "`pipeline-runtime inspect`"
        )
    if isinstance(latest, Stub):
        raise IncompatibleCheckpoint(
            f"checkpoint at {where} ends in a stub (commit {latest.seq}): the run was retired and its "
            "cleanup was interrupted, so nothing is left to resume. Use resume policy Restart to "
            "start over, or a new run id"
        )
    if latest.kind is Kind.TOMBSTONE:
        # Retired. A success is final: an attempt started after it (e.g. the pod was
        # killed during the cleanup) has nothing left to do, not everything. Other
        # outcomes left no state to resume from: start over.
        done = latest.completed_steps
        if (
            latest.outcome == "Succeeded"
            and rerun_from is None
            and done == wanted.names
            and latest.fingerprint == wanted.fingerprint
            and latest.params_hash == wanted.params_hash
        ):
            return Plan(keep=list(done), done=True)
        return FRESH
    if latest.pipeline_name != wanted.pipeline or latest.run_guid != wanted.run_id:
        raise IncompatibleCheckpoint(
            f"checkpoint at {where} belongs to pipeline {latest.pipeline_name!r} run "
            f"{latest.run_guid!r}, not {wanted.pipeline!r} run {wanted.run_id!r}"
        )
    if latest.tenant is not None and latest.tenant != wanted.tenant:  # None: written before tenants
        raise IncompatibleCheckpoint(
            f"checkpoint at {where} belongs to tenant {latest.tenant[:60]!r}, not {wanted.tenant!r}"
        )
    keep = list(latest.completed_steps)
    stored_def = latest.definition or {}
    if latest.fingerprint != wanted.fingerprint or latest.params_hash != wanted.params_hash:
        changed_def = latest.fingerprint != wanted.fingerprint
        change = what_changed(stored_def, wanted.definition) if changed_def else "the params"
        if wanted.policy is ResumePolicy.STRICT:
            raise IncompatibleCheckpoint(
                f"checkpoint at {where} was written by another definition: {change}; resume "
                "policy Strict refuses it. Use Compatible or Restart, or a new run id"
            )
        if latest.params_hash != wanted.params_hash or stored_def.get("version") != wanted.definition["version"]:
            return Plan(keep=None, restart=f"{change} since the checkpoint: nothing can be kept")
        keep = common_prefix(stored_def.get("steps", []), wanted.definition["steps"], keep)
    if rerun_from is not None and rerun_from in keep:
        keep = keep[: wanted.names.index(rerun_from)]
    return Plan(keep=keep, same_commit=keep == latest.completed_steps)


def progress_step(commit: Commit, keep: list[str], wanted: Wanted, rerun_from: str | None) -> str | None:
    """The step whose saved intra-step progress in ``commit`` the new attempt may use, or None.

    Progress belongs to one definition of one step, in one run of it: never hand it to a
    changed step, nor to a step the user asked to run again.
    """
    names = wanted.names
    nxt = names[len(keep)] if len(keep) < len(names) else None
    stored = commit.progress
    if nxt is None or stored is None or stored.step != nxt or keep != commit.completed_steps:
        return None
    if step_entry(commit.definition or {}, nxt) != step_entry(wanted.definition, nxt):
        return None
    if rerun_from is not None and names.index(rerun_from) <= len(keep):
        return None
    return nxt


def step_entry(definition: dict[str, Any], name: str) -> list[str] | None:
    return next((list(e) for e in definition.get("steps") or [] if e and e[0] == name), None)


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """One phrase naming the first difference between two definitions."""
    if old.get("pipeline") != new.get("pipeline"):
        return f"pipeline {old.get('pipeline')!r} became {new.get('pipeline')!r}"
    if old.get("version") != new.get("version"):
        return f"the pipeline's version changed from {old.get('version')!r} to {new.get('version')!r}"
    olds, news = [list(e) for e in old.get("steps") or []], [list(e) for e in new["steps"]]
    for o, n in zip(olds, news):
        if o[:1] != n[:1]:
            return f"step {o[0]!r} became {n[0]!r} (steps added, removed or reordered)"
        if o[1:2] != n[1:2]:
            return f"step {n[0]!r} changed version from {o[1]!r} to {n[1]!r}"
        if o[2:3] != n[2:3]:
            return f"the code of step {n[0]!r} changed (bump its version to say so, or keep Compatible)"
    if len(olds) != len(news):
        return f"the steps went from {[e[0] for e in olds]} to {[e[0] for e in news]}"
    return "the definition changed"


def common_prefix(old: list[list[str]], new: list[list[str]], completed: list[str]) -> list[str]:
    """The completed steps whose definition entries are unchanged, in order, from the first."""
    keep = []
    for o, n, done in zip(old, new, completed):
        if o != n or o[0] != done:
            break
        keep.append(done)
    return keep

"""Pipeline base class, the @step decorator, and the run loop with checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

import pydantic

from .checkpoint import (
    FINISHED_KINDS,
    Commit,
    CorruptCheckpoint,
    Kind,
    Latest,
    RunLog,
    Superseded,
    check_name,
    fingerprint,
    new_nonce,
    now,
    tombstone_of,
)
from .code_digest import code_digest
from .codec import POOL_BYTES, CorruptArtifact, Encoder, UnsupportedValue, decode, snapshot
from .commit_worker import CommitWorker
from .contracts import (
    DEFAULT_PROGRESS_INTERVAL_SECONDS,
    ENV_PROGRESS_INTERVAL,
    MAX_PROGRESS_INTERVAL_SECONDS,
    MIN_PROGRESS_INTERVAL_SECONDS,
    ResumePolicy,
    RetainPolicy,
)
from .errors import IncompatibleCheckpoint, InvalidInput, StepFailed, StopRequested, Terminated, parse_seconds
from .lifecycle import STOP
from .resume import Wanted, progress_step
from .resume import plan as resume_plan
from .storage.base import NotFound, Store, TransientStoreError

log = logging.getLogger("pipeline_runtime")


@dataclass(frozen=True)
class StepInfo:
    """What @step records on a method."""

    name: str
    version: str
    fn: Callable[[Any, StepContext], Any]
    overlap: bool = True


F = TypeVar("F", bound=Callable[..., Any])
REPORT_EVERY_SECONDS = 0.2
"""`ctx.report` events at most this often (a terminal redraws on each; JSON logs thin them out)."""


@overload
def step(fn: F) -> F: ...


@overload
def step(*, version: str = "1", name: str | None = None, overlap: bool = True) -> Callable[[F], F]: ...


def step(
    fn: Callable[..., Any] | None = None, *, version: str = "1", name: str | None = None, overlap: bool = True
) -> Any:
    """Mark a method as a pipeline step; steps run in definition order.

    Bump `version` when a step's output changes meaning: under `resume:
    Compatible`, completed steps are kept only up to the first changed one. An
    edit of the step's own body counts as a change by itself (its compiled code
    is part of the definition); an edit of code it calls does not: bump `version`.

    A step starts while the previous step's checkpoint is still uploading
    (`overlap=True`). A step with effects outside `ctx` (writing the final
    output, calling another service) sets `overlap=False`: it starts only once
    every earlier commit has landed, so an attempt that lost the run (a stale
    pod) learns it before doing them.
    """

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__respawn_step__ = StepInfo(name or f.__name__, version, f, overlap)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


class StepContext(MutableMapping[str, Any]):
    """The mapping steps read and write; it survives restarts.

    Values: JSON, numpy arrays, bytes, and lists/dicts of them. Arrays are made
    read-only once committed: copy one before changing it in place.
    """

    def __init__(
        self,
        data: dict[str, Any],
        params: Any,
        run_id: str,
        attempt: int,
        tenant: str,
        scratch_dir: Path,
        on_progress: Callable[[dict[str, Any]], None],
        on_report: Callable[[int, int | None, str], None] | None = None,
    ) -> None:
        self._data = data
        self.params = params
        self.run_id = run_id
        self.attempt = attempt
        self.tenant = tenant
        self.scratch_dir = scratch_dir
        self.step_name: str | None = None
        self.progress: dict[str, Any] | None = None
        """Intra-step state this step saved in an earlier attempt, or None."""
        self._on_progress = on_progress
        self._on_report = on_report

    def report(self, done: int, total: int | None = None, unit: str = "") -> None:
        """Say how far this step has got (`done` of `total` `unit`s), for people watching.

        A terminal shows it in place under the step's line; JSON logs get a
        `step_progress` event at most every few seconds. Display only: nothing is
        committed (what a resume needs goes to `save_progress`).
        """
        if self._on_report is not None:
            self._on_report(int(done), None if total is None else int(total), unit)

    def save_progress(self, state: dict[str, Any]) -> None:
        """Record intra-step progress at a safe point.

        Committed periodically and on SIGTERM; after SIGTERM this call does not
        return (the runtime commits `state` and stops the step).
        """
        if not isinstance(state, dict):
            raise TypeError("save_progress takes a dict")
        self._on_progress(state)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"context keys are str, got {type(key).__name__}")
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"StepContext({sorted(self._data)})"

    def snapshot(self) -> dict[str, Any]:
        """The values as they are now (a shallow copy: the keys, not copies of the values)."""
        return dict(self._data)

    def restore(self, values: dict[str, Any]) -> None:
        """Put back what `snapshot` returned: a step that failed or stopped leaves no keys behind."""
        self._data = dict(values)


@dataclass
class RunSummary:
    """What `Pipeline.run()` returns."""

    pipeline: str
    run_id: str
    attempt: int
    steps: dict[str, dict[str, Any]]
    """Per step: status (completed | skipped), duration_s, attempt, bytes_written."""
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resumed_from: dict[str, Any] | None = None
    checkpoint_uri: str | None = None


class NoParams(pydantic.BaseModel):
    """The params of a pipeline that takes none."""

    model_config = pydantic.ConfigDict(extra="forbid")


class Pipeline:
    """Base class: subclass it, add a pydantic `Params` and @step methods."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[pydantic.BaseModel]] = NoParams
    """Override with the pipeline's own pydantic model (a nested `class Params`)."""
    output_param: ClassVar[str | None] = None
    """The param that says where the result goes (e.g. "output_uri"): a finished run names it."""

    def __init__(
        self,
        params: Any = None,
        *,
        checkpoint_uri: str | None = None,
        run_id: str | None = None,
        tenant_id: str | None = None,
        attempt: int | None = None,
        store: Store | None = None,
        resume_policy: ResumePolicy | str = ResumePolicy.COMPATIBLE,
        retain: RetainPolicy | str = RetainPolicy.ON_FAILURE,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        progress_interval: float | None = None,
    ) -> None:
        self.raw_params = params
        self.checkpoint_uri = checkpoint_uri
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.tenant = tenant_id or "default"
        self.attempt = attempt
        self._store = store
        try:
            self.resume_policy = ResumePolicy(resume_policy)
            self.retain = RetainPolicy(retain)
        except ValueError as e:
            raise InvalidInput(f"checkpoint policy: {e}") from None
        self.on_event = on_event or (lambda event, fields: None)
        raw = (
            progress_interval
            if progress_interval is not None
            else os.environ.get(ENV_PROGRESS_INTERVAL, DEFAULT_PROGRESS_INTERVAL_SECONDS)
        )
        self.progress_interval = parse_seconds(
            f"progress interval ({ENV_PROGRESS_INTERVAL})",
            raw,
            low=MIN_PROGRESS_INTERVAL_SECONDS,
            high=MAX_PROGRESS_INTERVAL_SECONDS,
        )

    # -- definition ------------------------------------------------------------
    @classmethod
    def pipeline_name(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def steps(cls) -> list[StepInfo]:
        """Steps in definition order; a subclass overriding a step keeps its place."""
        order: dict[str, StepInfo] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                info = getattr(attr, "__respawn_step__", None)
                if isinstance(info, StepInfo):
                    order[info.name] = info
        return list(order.values())

    @classmethod
    def definition(cls) -> dict[str, Any]:
        """What the fingerprint covers: the pipeline's name and version, and per step its
        name, version and a digest of its compiled code (code_digest.py)."""
        return {
            "pipeline": cls.pipeline_name(),
            "version": cls.version,
            "steps": [[s.name, s.version, code_digest(s.fn)] for s in cls.steps()],
        }

    def validate_params(self, extra: dict[str, Any]) -> pydantic.BaseModel:
        raw = self.raw_params
        if isinstance(raw, pydantic.BaseModel):
            raw = raw.model_dump()
        merged = {**(raw or {}), **extra}
        if self.Params.model_config.get("extra") is None:
            # pydantic's default silently drops unknown keys; a typo in a param must
            # not go unnoticed for hours. A model that sets `extra` itself decides.
            known = set()
            for fname, finfo in self.Params.model_fields.items():
                known |= {fname, finfo.alias or fname}
            unknown = sorted(set(merged) - known)
            if unknown:
                raise InvalidInput(
                    f"invalid params for pipeline {self.pipeline_name()!r}: "
                    + "; ".join(f"{k}: unknown param (known: {', '.join(sorted(known)) or 'none'})" for k in unknown)
                )
        try:
            return self.Params.model_validate(merged)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in e.errors()
            )
            raise InvalidInput(f"invalid params for pipeline {self.pipeline_name()!r}: {problems}") from None

    # -- running ---------------------------------------------------------------
    def run(self, resume_from_checkpoint: bool = True, rerun_from: str | None = None, **params: Any) -> RunSummary:
        """Run the remaining steps; commit after each; return the summary."""
        steps = self.steps()
        if not steps:
            raise InvalidInput(f"pipeline {self.pipeline_name()!r} has no @step methods")
        names = [s.name for s in steps]
        if rerun_from is not None and rerun_from not in names:
            raise InvalidInput(f"rerunFrom: unknown step {rerun_from!r}; steps are {', '.join(names)}")
        validated = self.validate_params(params)
        if self.attempt is not None and (not isinstance(self.attempt, int) or self.attempt < 1):
            raise InvalidInput(f"attempt: {self.attempt!r} is not an attempt number (1, 2, ...)")
        try:
            check_name("run id", self.run_id)
            check_name("tenant", self.tenant)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        scratch = Path(tempfile.mkdtemp(prefix=f"respawn-{self.run_id[:40]}-"))
        try:
            return _Run(self, steps, validated, scratch).execute(resume_from_checkpoint, rerun_from)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def open_store(self) -> Store | None:
        if self._store is not None:
            return self._store
        if self.checkpoint_uri is None:
            return None
        from .storage import open_store

        try:
            return open_store(self.checkpoint_uri)
        except ValueError as e:
            raise InvalidInput(f"checkpoint uri: {e}") from None


def params_hash(params: pydantic.BaseModel) -> str:
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Base:
    """The state a new attempt starts from."""

    completed: list[str]
    context: dict[str, Any]
    progress: dict[str, Any] | None
    summary: dict[str, dict[str, Any]]
    resumed_from: dict[str, Any] | None
    epoch: int | None = None
    """The artifact epoch of the commit resumed from; None: starting over (a new epoch)."""


class _Run:
    """One execution of `Pipeline.run`: claim, run steps, commit, finish."""

    def __init__(self, pipeline: Pipeline, steps: list[StepInfo], params: pydantic.BaseModel, scratch: Path) -> None:
        self.p = pipeline
        self.steps = steps
        self.names = [s.name for s in steps]
        self.params = params
        self.scratch = scratch
        self.definition = pipeline.definition()
        self.fp = fingerprint(self.definition)
        self.phash = params_hash(params)
        self.worker: CommitWorker | None = None
        self.encoder: Encoder | None = None
        """Uploads artifacts; None when checkpointing is off."""
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="respawn-io")
        self.summary: dict[str, dict[str, Any]] = {}
        self.completed: list[str] = []
        self.current: str | None = None
        self.attempt: int = pipeline.attempt or 1
        """This attempt's number: the claim fixes it (one more than the last writer's, locally)."""
        self._last_progress_commit = time.monotonic()
        self._last_report = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        self.p.on_event(event, {"pipeline": self.p.pipeline_name(), "run_id": self.p.run_id, **fields})

    # -- commit bodies -----------------------------------------------------------
    def body(self, kind: Kind, attempt: int, **extra: Any) -> Commit:
        """A commit of this run as it stands (RunLog.append seals it; the worker adds the state)."""
        return Commit(
            kind=kind,
            attempt=attempt,
            at=now(),
            nonce=new_nonce(),
            pipeline_name=self.p.pipeline_name(),
            run_guid=self.p.run_id,
            tenant=self.p.tenant,
            definition=self.definition,
            fingerprint=self.fp,
            params_hash=self.phash,
            completed_steps=list(self.completed),
            step=self.current,
            steps_summary=json.loads(json.dumps(self.summary)),
            artifact_epoch=self.encoder.epoch if self.encoder else 0,
            **extra,
        )

    # -- claim -------------------------------------------------------------------
    def claim(self, runlog: RunLog, resume: bool, rerun_from: str | None) -> tuple[int, _Base]:
        """Fence older attempts off with a claim commit; return (attempt, base state)."""
        blocked = 0
        for _ in range(50):
            latest = runlog.latest()
            attempt = self.p.attempt
            if attempt is None:  # local use: one more than whoever wrote last
                attempt = latest.body.attempt + 1 if latest and isinstance(latest.body, Commit) else 1
            other = latest.body if latest is not None else None
            if isinstance(other, Commit):  # a stub has no attempt to fence with
                finished = other.kind in FINISHED_KINDS
                if other.attempt > attempt or (finished and other.attempt >= attempt):
                    raise Superseded(
                        f"attempt {attempt} is stale: the checkpoint at {runlog.uri} was "
                        f"{'finished' if finished else 'claimed'} by attempt {other.attempt}"
                    )
            assert self.encoder is not None
            self.encoder.reset()
            base = self.base_state(runlog, latest, resume, rerun_from)
            # Resuming: the resumed commit's epoch and what it holds. Starting over: a new
            # epoch, trusting nothing stored (a cleanup may be deleting the old ones).
            self.encoder.epoch = base.epoch if base.epoch is not None else (latest.seq if latest else 0)
            if base.epoch is not None:
                self.encoder.known |= runlog.artifact_shas(base.epoch)
            context_plan = snapshot(base.context, "context") if base.context else {"dict": {}}
            self.completed = list(base.completed)
            self.summary = dict(base.summary)
            self.attempt = attempt
            self.worker = self._start_worker(runlog)
            body = self.body(Kind.CLAIM, attempt, resumed_from=base.resumed_from)
            progress_plan = None
            if base.progress is not None:
                progress_plan = {"step": base.progress["step"], "state": snapshot(base.progress["state"], "progress")}
            seq = (latest.seq if latest else 0) + blocked
            try:
                self.worker.claim(seq + 1, body, context_plan, progress_plan)
            except Superseded:
                self.worker.close()
                now_latest = runlog.latest()
                if (now_latest.seq if now_latest else 0) == seq - blocked and not runlog.slot_taken(seq + 1):
                    blocked += 1  # the slot holds no commit (a folder?) and nobody wrote: skip it
                continue  # somebody wrote meanwhile: look again
            return attempt, base
        raise TransientStoreError(f"could not claim {runlog.uri}: the commit log keeps moving")

    def _start_worker(self, runlog: RunLog) -> CommitWorker:
        assert self.encoder is not None  # made with the RunLog
        return CommitWorker(runlog, self.encoder, on_commit=self._committed, pool=self.pool)

    def _committed(self, seq: int, body: Commit, uploaded: int) -> None:
        step_name = body.step
        if body.kind is Kind.STEP and step_name in self.summary:
            self.summary[step_name]["bytes_written"] = uploaded
        done = body.completed_steps
        # `step` is the last completed step (what a resume continues after); a
        # progress commit also names the step whose intra-step state it holds.
        self.emit(
            "commit",
            seq=seq,
            kind=body.kind.value,
            step=done[-1] if done else None,
            in_step=step_name if body.kind is Kind.PROGRESS else None,
            completed=len(done),
            total=len(self.names),
            attempt=body.attempt,
            bytes_written=uploaded,
            at=body.at,
        )

    def wanted(self) -> Wanted:
        return Wanted(
            pipeline=self.p.pipeline_name(),
            run_id=self.p.run_id,
            tenant=self.p.tenant,
            definition=self.definition,
            fingerprint=self.fp,
            params_hash=self.phash,
            policy=self.p.resume_policy,
        )

    def base_state(self, runlog: RunLog, latest: Latest | None, resume: bool, rerun_from: str | None) -> _Base:
        """Read and decode the state `resume.plan` says the attempt starts from."""
        fresh = _Base([], {}, None, {}, None)
        where = runlog.uri
        newest = latest.body if latest is not None else None
        error = (latest.error or "unreadable") if latest is not None and newest is None else None
        wanted = self.wanted()
        plan = resume_plan(newest, error, where, wanted, resume, rerun_from)
        if plan.restart is not None:
            self.emit("restart", reason=plan.restart)
        if plan.keep is None or not isinstance(newest, Commit):
            return fresh
        body = newest
        keep = plan.keep
        if plan.done:
            return _Base(
                keep,
                {},
                None,
                dict(body.steps_summary or {}),
                {"seq": body.seq, "step": keep[-1], "attempt": body.attempt},
            )
        if not plan.same_commit:
            found = _commit_at(runlog, keep)
            if found is None:
                self.emit("restart", reason=f"no commit holds the state after {keep}")
                return fresh
            body = found
        epoch = body.artifact_epoch
        try:
            if body.context is None:
                raise ValueError("it holds no context")
            reader = runlog.artifact_reader
            context = decode(body.context, runlog.get_artifact, self.encoder, self.pool, epoch, reader)
            progress = None
            step = progress_step(body, keep, wanted, rerun_from)
            if step is not None and body.progress is not None:
                state = decode(body.progress.state, runlog.get_artifact, self.encoder, self.pool, epoch, reader)
                progress = {"step": step, "state": state}
        except (CorruptArtifact, NotFound, KeyError, TypeError, ValueError, RecursionError) as e:
            raise IncompatibleCheckpoint(
                f"checkpoint at {where} (commit {body.seq}) is damaged: {e}. Use resume policy Restart to start over"
            ) from None
        summary = {k: v for k, v in (body.steps_summary or {}).items() if k in keep}
        return _Base(
            keep,
            context or {},
            progress,
            summary,
            {"seq": body.seq, "step": keep[-1] if keep else None, "attempt": body.attempt},
            epoch,
        )

    # -- main loop -----------------------------------------------------------------
    def execute(self, resume: bool, rerun_from: str | None) -> RunSummary:
        store = self.p.open_store()
        runlog = RunLog(store, self.p.tenant, self.p.run_id) if store is not None else None
        if STOP.requested:
            raise Terminated(f"{STOP.name} before the first step; nothing to commit")
        base = _Base([], {}, None, {}, None)
        attempt = self.p.attempt or 1
        try:  # from the claim on: the claim starts the commit worker, which must always be closed
            if runlog is not None:
                # Its epoch and known artifacts: set by the claim.
                self.encoder = Encoder(runlog.put_artifact, pool_bytes=POOL_BYTES if runlog.local_puts else 0)
                try:
                    attempt, base = self.claim(runlog, resume, rerun_from)
                except CorruptCheckpoint as e:
                    raise IncompatibleCheckpoint(str(e)) from None
            self.attempt = attempt
            self.completed = list(base.completed)
            self.summary = dict(base.summary)
            ctx = StepContext(
                dict(base.context),
                self.params,
                self.p.run_id,
                attempt,
                self.p.tenant,
                self.scratch,
                self._on_progress,
                self._on_report,
            )
            result = RunSummary(
                self.p.pipeline_name(),
                self.p.run_id,
                attempt,
                self.summary,
                resumed_from=base.resumed_from,
                checkpoint_uri=runlog.uri if runlog else None,
            )
            self.emit(
                "start",
                attempt=attempt,
                total=len(self.names),
                completed=len(self.completed),
                resumed_from=base.resumed_from,
            )
            for info in self.steps:
                if info.name in self.completed:
                    result.skipped.append(info.name)
                    continue
                self._check_between_steps(info)
                self.run_step(info, ctx, base)
                result.executed.append(info.name)
            self.current = None
            if self.worker is not None:
                self.worker.submit(self.body(Kind.FINAL, attempt, outcome="Succeeded"), None, None)
                self.worker.flush()
                self.worker.raise_if_failed()
                self._retire(runlog, "Succeeded")
        finally:
            if self.worker is not None:
                self.worker.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
        output = getattr(self.params, self.p.output_param, None) if self.p.output_param else None
        self.emit(
            "succeeded",
            attempt=attempt,
            total=len(self.names),
            **({"output": str(output)} if output is not None else {}),
            **({"checkpoint": runlog.uri} if runlog is not None and self.p.retain is RetainPolicy.ALWAYS else {}),
        )
        return result

    def _check_between_steps(self, nxt: StepInfo) -> None:
        if self.worker is not None:
            # Run ahead by one commit at most: the upload of the step just done may
            # overlap with this one, older commits must have landed. Otherwise a
            # stale attempt whose commits hang would run every remaining step.
            self.worker.flush(at_most=1 if nxt.overlap else 0, stop=lambda: STOP.requested)
            self.worker.raise_if_failed()
        if STOP.requested:
            self._stop("between steps")

    def _stop(self, where: str) -> None:
        if self.worker is not None:
            self.worker.flush(timeout=STOP.remaining())
            self.worker.raise_if_failed()
        raise Terminated(f"{STOP.name}: stopped {where} after committing {len(self.completed)}/{len(self.names)} steps")

    def run_step(self, info: StepInfo, ctx: StepContext, base: _Base) -> None:
        self.current = info.name
        ctx.step_name = info.name
        ctx.progress = base.progress["state"] if (base.progress and base.progress["step"] == info.name) else None
        self.emit(
            "step_start",
            step=info.name,
            index=len(self.completed) + 1,
            total=len(self.names),
            attempt=self.attempt,
            resumed=ctx.progress is not None,
        )
        started = time.monotonic()
        snapshot_before = ctx.snapshot()
        try:
            info.fn(self.p, ctx)
        except StopRequested:
            ctx.restore(snapshot_before)
            self._stop(f"inside step {info.name!r}")
        except (InvalidInput, Terminated):
            raise
        except Superseded:
            raise
        except Exception as e:
            if self.worker is not None:
                self.worker.raise_if_failed()  # a storage/fencing error surfaced inside the step
            ctx.restore(snapshot_before)
            self.summary[info.name] = {
                "status": "failed",
                "attempt": self.attempt,
                "duration_s": round(time.monotonic() - started, 3),
                "error": f"{type(e).__name__}: {e}"[:500],
            }
            if self.worker is not None:
                self.worker.submit(self.body(Kind.FAILED, self.attempt), None, None)
                self.worker.flush(timeout=30)
            raise StepFailed(info.name, e) from e
        duration = time.monotonic() - started
        self.completed.append(info.name)
        self.summary[info.name] = {
            "status": "completed",
            "attempt": self.attempt,
            "duration_s": round(duration, 3),
            "bytes_written": 0,
            "finished_at": now(),
        }
        self.emit(
            "step_done", step=info.name, index=len(self.completed), total=len(self.names), duration_s=round(duration, 3)
        )
        base.progress = None
        if self.worker is not None:
            try:
                plan = snapshot(ctx.snapshot(), "ctx")
            except UnsupportedValue as e:
                raise StepFailed(info.name, e) from e
            self.worker.submit(self.body(Kind.STEP, self.attempt), plan, None)
            self._last_progress_commit = time.monotonic()

    def _on_report(self, done: int, total: int | None, unit: str) -> None:
        due = time.monotonic() - self._last_report >= REPORT_EVERY_SECONDS
        if due or (total is not None and done >= total):
            self._last_report = time.monotonic()
            self.emit("step_progress", step=self.current, done=done, total=total, unit=unit)

    def _on_progress(self, state: dict[str, Any]) -> None:
        due = time.monotonic() - self._last_progress_commit >= self.p.progress_interval
        if self.worker is not None and (STOP.requested or due):
            self.worker.raise_if_failed()
            plan = {"step": self.current, "state": snapshot(state, "progress")}
            self.worker.submit(self.body(Kind.PROGRESS, self.attempt), None, plan)
            self._last_progress_commit = time.monotonic()
        if STOP.requested:
            raise StopRequested()

    def _retire(self, runlog: RunLog | None, outcome: str) -> None:
        retain = self.p.retain
        if runlog is None or self.worker is None or retain is RetainPolicy.ALWAYS:
            return
        if retain is RetainPolicy.ON_FAILURE and outcome != "Succeeded":
            return
        seq = runlog.retire(tombstone_of(self.body(Kind.TOMBSTONE, self.attempt), outcome=outcome), self.worker.seq)
        self.emit("retired", seq=seq, retain=retain.value)


def _commit_at(runlog: RunLog, completed: list[str]) -> Commit | None:
    """The newest commit whose completed steps are exactly `completed`."""
    for seq in reversed(runlog.seqs()):
        try:
            body = runlog.read(seq)
        except (CorruptCheckpoint, NotFound):
            continue
        if isinstance(body, Commit) and body.kind in (Kind.STEP, Kind.CLAIM) and body.completed_steps == completed:
            return body
    return None

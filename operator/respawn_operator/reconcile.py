"""Decide what a PipelineRun needs next, as a pure function of what we observed.

:func:`decide` takes the run's object, the current attempt's Job and pod, and the time,
and returns a :class:`Decision`: the new status, at most one Job to create, attempts
to stop, events to post and when to look again. The reconciler (``reconciler.py``)
only observes, calls :func:`decide`, and hands the decision to the executor
(``executor.py``), which carries it out in this order: stop, create, patch status, post
events. What it learns while acting (the API server refused the Job) comes back as an
observation (``Observed.job_rejected``) for a second :func:`decide`, never as an edit. Because the Job is created *before* the status
that mentions it, a crash in between leaves a Job whose create answers 409 the next
time; it is read and adopted, never duplicated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from respawn_operator import ANNOTATION_PROGRESS
from respawn_operator.budgets import exhausted_budget, failure_backoff, remaining_deadline
from respawn_operator.classify import Charge, Outcome, classify_attempt, pod_is_done, pod_is_terminal
from respawn_operator.config import OperatorConfig
from respawn_operator.job_builder import build_cleanup_job, build_job, job_name, wants_spot
from respawn_operator.reports import parse_report, progress_fields
from respawn_operator.spec import (
    AttemptOutcome,
    AttemptRecord,
    Condition,
    ConditionType,
    Phase,
    PipelineRunSpec,
    PipelineRunStatus,
    RerunRecord,
    RetainPolicy,
    Run,
    SpecError,
    default_run_id,
    parse_spec,
    parse_status,
    result_hash,
)
from respawn_operator.timeutil import fmt, parse

STOP_POLL_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the handlers saw of the current attempt."""

    job: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    """The attempt's pod as last seen (from the API, else from the watch cache)."""
    pod_gone: bool = False
    """The pod was seen and has since been deleted from the API."""
    node_exists: bool | None = None
    node_labels: dict[str, str] | None = None
    job_rejected: str | None = None
    """The API server refused the Job this round's decision built (422), with its message:
    decide again, and the run fails instead of starting the attempt."""


@dataclasses.dataclass(frozen=True)
class Stop:
    """Stop an attempt.

    Gracefully (the default) the Job and the pod object stay, so the attempt's log does: a
    started pod gets its ``spec.activeDeadlineSeconds`` lowered (kubelet sends SIGTERM, waits
    the grace period, marks it Failed/DeadlineExceeded) and the ``respawn.dev/stopped:
    <reason>`` annotation; a pod that never started, or an attempt with no pod, has its Job
    deleted. ``grace_seconds`` 0 forces it (a lost node): Job and pods are deleted at once.
    """

    attempt: int
    job: str
    grace_seconds: int | None = None
    reason: str = "Stopped"


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the PipelineRun."""

    type: str
    reason: str
    message: str


@dataclasses.dataclass
class Decision:
    """What to do; ``status`` is the complete new status."""

    status: PipelineRunStatus
    create_job: dict[str, Any] | None = None
    stops: list[Stop] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None
    ended: tuple[AttemptRecord, Outcome] | None = None
    """The attempt that ended in this round, for metrics."""
    retire_job: dict[str, Any] | None = None
    """A Job that retires the checkpoint: the run failed for good under ``retain: Never``."""
    prune_jobs: list[str] = dataclasses.field(default_factory=list)
    """Jobs of attempts older than the last ``kept_attempts`` (deleted, their pods with them)."""


def set_condition(
    st: PipelineRunStatus, type_: str, status: str, reason: str, message: str, generation: int, now: dt.datetime
) -> None:
    old = next((c for c in st.conditions if c.type == type_), None)
    changed = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message or None,
        last_transition_time=fmt(now) if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    st.conditions = [c for c in st.conditions if c.type != type_] + [new]
    st.conditions.sort(key=lambda c: ConditionType.ORDER.index(c.type) if c.type in ConditionType.ORDER else 9)


def _finish(d: Decision, phase: Phase, reason: str, message: str, generation: int, now: dt.datetime) -> None:
    st = d.status
    st.phase = phase
    st.message = message
    st.completion_time = fmt(now)
    st.next_attempt_time = None
    ok = phase is Phase.SUCCEEDED
    set_condition(st, ConditionType.SUCCEEDED, "True" if ok else "False", reason, message, generation, now)
    d.events.append(Event("Normal" if ok else "Warning", reason if not ok else "Succeeded", message))


def _refresh_conditions(st: PipelineRunStatus, generation: int, now: dt.datetime, stopping: str | None) -> None:
    phase = st.phase or Phase.PENDING
    if not phase.finished:
        set_condition(st, ConditionType.SUCCEEDED, "Unknown", phase.value, st.message or "", generation, now)
    if phase is Phase.RUNNING:
        set_condition(
            st, ConditionType.READY, "True", "PodRunning", f"attempt {st.attempt} is running", generation, now
        )
    else:
        set_condition(st, ConditionType.READY, "False", phase.value, "", generation, now)
    last = st.last_checkpoint
    if last and (last.step or last.seq is not None):
        set_condition(
            st,
            ConditionType.CHECKPOINTED,
            "True",
            "Committed",
            f"step {last.step} committed (seq {last.seq}) at {last.at}",
            generation,
            now,
        )
    else:
        set_condition(st, ConditionType.CHECKPOINTED, "False", "NoCheckpoint", "no step committed yet", generation, now)
    if phase is Phase.SUSPENDED:
        set_condition(
            st,
            ConditionType.SUSPENDED,
            "True",
            "Suspended",
            "spec.suspend is true; set it to false to resume from the last checkpoint",
            generation,
            now,
        )
    elif stopping == "Suspended":
        set_condition(
            st,
            ConditionType.SUSPENDED,
            "False",
            "Suspending",
            "waiting for the pod to commit its checkpoint and stop",
            generation,
            now,
        )
    else:
        set_condition(st, ConditionType.SUSPENDED, "False", "NotSuspended", "", generation, now)
    for c in st.conditions:
        c.observed_generation = generation
    st.observed_generation = generation
    if st.completed_steps is not None and st.total_steps is not None:
        st.progress = f"{st.completed_steps}/{st.total_steps}"


def checkpoint_text(raw: Any, step: str | None) -> str | None:
    """What a commit the pod reported was: ``committed step crop``, ``saved progress in augment``;
    None for a commit with no step behind it (an attempt's claim: nothing to tell)."""
    raw = raw if isinstance(raw, dict) else {}
    if raw.get("kind") == "progress" and raw.get("inStep"):
        return f"saved progress in step {raw['inStep']}"
    return f"committed step {step}" if step else None


def _apply_progress(d: Decision, report: dict[str, Any] | None, attempt: int) -> None:
    """Copy progress into status; post a Checkpointed event when a new commit shows up."""
    if not report:
        return
    rep_attempt = report.get("attempt")
    if isinstance(rep_attempt, int) and rep_attempt != attempt:
        return  # a stale attempt's report must not move the run's progress
    fields = progress_fields(report)
    st = d.status
    new_ckpt = fields.get("last_checkpoint")
    if new_ckpt is not None and new_ckpt != st.last_checkpoint:
        old = st.last_checkpoint
        text = checkpoint_text(report.get("lastCheckpoint"), new_ckpt.step)
        if text and (old is None or (new_ckpt.seq, new_ckpt.step) != (old.seq, old.step)):
            d.events.append(
                Event(
                    "Normal",
                    "Checkpointed",
                    f"attempt {attempt} {text}" + (f" (seq {new_ckpt.seq})" if new_ckpt.seq is not None else ""),
                )
            )
    for key, value in fields.items():
        setattr(st, key, value)


WAITING_HINTS = {
    "ErrImagePull": "check spec.image and the image pull secret",
    "ImagePullBackOff": "check spec.image and the image pull secret",
    "InvalidImageName": "fix spec.image",
    "CreateContainerConfigError": "a Secret or ConfigMap named in spec.env is missing",
    "Unschedulable": "no node fits: check resources, nodeSelector and tolerations",
}


def waiting_message(pod: dict[str, Any] | None) -> str | None:
    """Why a pod is not running yet, with a hint, when Kubernetes says so."""
    status = (pod or {}).get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in WAITING_HINTS:
            return f"{reason}: {waiting.get('message') or ''} ({WAITING_HINTS[reason]})".replace(":  (", " (")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") in WAITING_HINTS:
            return f"Unschedulable: {cond.get('message') or ''} ({WAITING_HINTS['Unschedulable']})"
    return None


def _rerun_confirmed(st: PipelineRunStatus) -> bool:
    """True once an attempt of the current re-run has committed (so the discard is stored)."""
    last = st.last_checkpoint
    return st.rerun is not None and last is not None and (last.attempt or 0) >= st.rerun.attempt


def _current_record(st: PipelineRunStatus) -> AttemptRecord | None:
    if st.attempts and st.attempts[-1].attempt == st.attempt:
        return st.attempts[-1]
    return None


def _pod_facts(rec: AttemptRecord, obs: Observed, config: OperatorConfig) -> None:
    pod = obs.pod
    if not pod:
        return
    rec.pod = (pod.get("metadata") or {}).get("name") or rec.pod
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        rec.node = node
    if obs.node_labels is not None:
        rec.spot = any(k in obs.node_labels for k in config.spot_label_keys)
    elif rec.spot is None:
        rec.spot = wants_spot(pod.get("spec") or {}, config.spot_label_keys)


@dataclasses.dataclass
class _Round:
    """One call of :func:`decide`: the decision being built and what it needs."""

    d: Decision
    generation: int
    now: dt.datetime
    config: OperatorConfig

    @property
    def st(self) -> PipelineRunStatus:
        return self.d.status

    def finish(self, phase: Phase, reason: str, message: str) -> Decision:
        _finish(self.d, phase, reason, message, self.generation, self.now)
        return self.done()

    def done(self, stopping: str | None = None) -> Decision:
        _refresh_conditions(self.st, self.generation, self.now, stopping)
        return self.d


def decide(
    body: dict[str, Any],
    obs: Observed,
    now: dt.datetime,
    config: OperatorConfig,
) -> Decision:
    """The next step for the PipelineRun ``body`` (a plain dict of the object)."""
    d = _decide(body, obs, now, config)
    if obs.job_rejected is not None and d.create_job is not None:
        _reject_attempt(d, body, obs.job_rejected, now)
    if (
        d.status.phase is Phase.FAILED
        and (body.get("status") or {}).get("phase") != Phase.FAILED.value
        and d.status.attempt
    ):
        # Failed for good: only the operator knows, so it retires what `retain: Never` must not keep.
        meta = body.get("metadata") or {}
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError:
            return d  # unparseable: the retain policy is unknown, keep everything
        if spec.checkpoint.retain is RetainPolicy.NEVER:
            run = Run(
                name=meta["name"],
                namespace=meta.get("namespace", "default"),
                uid=meta.get("uid", ""),
                generation=int(meta.get("generation") or 1),
                spec=spec,
                status=d.status,
            )
            d.retire_job = build_cleanup_job(run, config, purge=False)
    return d


def _decide(
    body: dict[str, Any],
    obs: Observed,
    now: dt.datetime,
    config: OperatorConfig,
) -> Decision:
    meta = body.get("metadata") or {}
    name, namespace, uid = meta["name"], meta.get("namespace", "default"), meta.get("uid", "")
    st = parse_status(body.get("status")).model_copy(deep=True)
    st.run_id = default_run_id(namespace, name, uid)  # shown in status, never read back from it
    r = _Round(Decision(status=st), int(meta.get("generation") or 1), now, config)
    rec = _current_record(st)
    active = rec is not None and rec.outcome is None

    def invalid_spec(problem: str) -> Decision:
        """Stop the running attempt (if any) and fail the run until its spec is fixed."""
        if active and rec is not None:
            r.d.stops.append(Stop(rec.attempt, rec.job, reason="InvalidSpec"))
            rec.outcome, rec.reason, rec.end_time = AttemptOutcome.STOPPED, "InvalidSpec", fmt(now)
        if st.phase is not Phase.FAILED or st.message != f"invalid spec: {problem}":
            return r.finish(Phase.FAILED, "InvalidSpec", f"invalid spec: {problem}")
        return r.done()

    try:
        spec = parse_spec(body.get("spec") or {})
    except SpecError as exc:
        return invalid_spec(str(exc))
    if spec.checkpoint.uri is None and config.default_checkpoint_uri is None:
        if st.phase is not Phase.FAILED:
            return r.finish(
                Phase.FAILED,
                "InvalidSpec",
                "invalid spec: spec.checkpoint.uri is required (the operator has no RESPAWN_DEFAULT_CHECKPOINT_URI)",
            )
        return r.done()
    refusal = config.checkpoint_uri_refusal(namespace, spec.checkpoint.uri or config.default_checkpoint_uri or "")
    if refusal is not None:
        return invalid_spec(refusal)
    succeeded = next((c for c in st.conditions if c.type == ConditionType.SUCCEEDED), None)
    if st.phase is Phase.FAILED and succeeded is not None and succeeded.reason == "InvalidSpec":
        # The spec was fixed: carry on where the run was (a GitOps repair, no re-create needed).
        st.phase, st.message, st.completion_time = None, None, None
        r.d.events.append(Event("Normal", "SpecFixed", "the spec is valid again; the run continues"))

    # A. Has the active attempt ended?
    if active and rec is not None:
        _pod_facts(rec, obs, config)
        outcome = _attempt_outcome(rec, obs)
        if outcome is None:
            _track_running(r, rec, obs)
        else:
            ended = _record_end(r, spec, rec, outcome, obs)
            if ended is not None:
                return ended
            active = False

    # B0. Convergence: a spec change the result depends on (pipeline, image, params, tenant,
    # checkpoint uri/resume) stops the running attempt and starts the next one, which resumes
    # from the first affected step (the runtime decides what is still valid). A finished run
    # runs again; budgets count from zero for the new spec.
    wanted = result_hash(spec)
    spec_changed = st.spec_hash is not None and st.spec_hash != wanted
    if spec_changed and active and rec is not None:
        if not rec.stopping:
            rec.stopping = "SpecChanged"
            r.d.stops.append(Stop(rec.attempt, rec.job, reason=rec.stopping))
            r.d.events.append(
                Event(
                    "Normal",
                    "SpecChanged",
                    f"the spec changed (generation {r.generation}): "
                    f"stopping attempt {rec.attempt}; the next one runs the new spec",
                )
            )
            r.d.requeue_after = STOP_POLL_SECONDS
        return r.done(rec.stopping)
    if spec_changed:
        r.d.events.append(
            Event(
                "Normal",
                "SpecChanged",
                f"the spec changed (generation {r.generation}): running it, resuming from what is still valid",
            )
        )
        st.spec_hash = wanted  # the run now belongs to this spec, even if no attempt can start yet
        st.preemptions = st.failures = 0
        st.next_attempt_time = st.completion_time = st.message = None
        if (st.phase or Phase.PENDING).finished:
            st.phase = Phase.RETRYING
            set_condition(
                st,
                ConditionType.SUCCEEDED,
                "Unknown",
                "SpecChanged",
                f"running generation {r.generation}",
                r.generation,
                now,
            )

    # B. Rerun requests: a new non-null spec.rerunFrom (cleared means "the next one counts again").
    if spec.rerun_from is None and st.rerun is not None:
        st.rerun = None
    rerun_needed = spec.rerun_from is not None and (st.rerun is None or st.rerun.step != spec.rerun_from)
    if rerun_needed and st.attempt == 0:
        # Nothing ran yet, so there is nothing to discard, but the first attempt still gets
        # RESPAWN_RERUN_FROM: the runtime checks the step name (exit 64 if the pipeline has
        # no such step) and otherwise runs every step. Recorded so it is not repeated.
        st.rerun = RerunRecord(step=spec.rerun_from or "", generation=r.generation, attempt=1)
        rerun_needed = False
    if (st.phase or Phase.PENDING).finished and not rerun_needed:
        return r.done()

    # C. Stop the active attempt for suspend or rerun (unsuspended while stopping: let it
    # stop; the next attempt resumes).
    if active and rec is not None:
        want = "Suspended" if spec.suspend else ("RerunRequested" if rerun_needed else None)
        if want and not rec.stopping:
            rec.stopping = want
            r.d.stops.append(Stop(rec.attempt, rec.job, reason=want))
            r.d.events.append(
                Event("Normal", "Stopping", f"stopping attempt {rec.attempt} ({want}); it commits a checkpoint first")
            )
            r.d.requeue_after = STOP_POLL_SECONDS
        return r.done(rec.stopping)

    # D. No attempt is running.
    if spec.suspend:
        if st.phase is not Phase.SUSPENDED:
            r.d.events.append(Event("Normal", "Suspended", "run suspended; its checkpoint is kept"))
        st.phase = Phase.SUSPENDED
        st.next_attempt_time = None
        return r.done()
    run = Run(name=name, namespace=namespace, uid=uid, generation=r.generation, spec=spec, status=st)
    return _start_next_attempt(r, run, rerun_needed)


def _attempt_outcome(rec: AttemptRecord, obs: Observed) -> Outcome | None:
    """How the active attempt ended, or ``None`` while it runs (or is still stopping)."""
    pod = obs.pod
    outcome = classify_attempt(obs.job, pod, node_exists=obs.node_exists, pod_gone=obs.pod_gone)
    if outcome is None and obs.job is None and (pod is None or obs.pod_gone):
        if rec.stopping:
            return Outcome(AttemptOutcome.STOPPED, rec.stopping)
        return Outcome(AttemptOutcome.PREEMPTED, "JobDeleted", "the attempt's Job was deleted", Charge.PREEMPTION)
    if (
        outcome is not None
        and rec.stopping
        and pod is not None
        and not (pod_is_done(pod) or obs.pod_gone or obs.node_exists is False)
    ):
        return None  # stopping: wait until the pod has committed and its container has ended
    if outcome is not None and rec.stopping and outcome.outcome is not AttemptOutcome.SUCCEEDED and not outcome.fatal:
        return dataclasses.replace(outcome, outcome=AttemptOutcome.STOPPED, reason=rec.stopping, charge=Charge.NONE)
    return outcome


def _track_running(r: _Round, rec: AttemptRecord, obs: Observed) -> None:
    """The attempt goes on: copy its live progress, and say why its pod waits if it does."""
    st, pod = r.st, obs.pod
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    _apply_progress(r.d, parse_report(annotations.get(ANNOTATION_PROGRESS)), rec.attempt)
    if rec.stopping:
        r.d.requeue_after = STOP_POLL_SECONDS
        return
    running = ((pod or {}).get("status") or {}).get("phase") == "Running"
    st.phase = Phase.RUNNING if running else (Phase.PENDING if st.attempt <= 1 else Phase.RETRYING)
    st.message = None if running else waiting_message(pod)


_FATAL_HINTS = {
    "InvalidInput": "fix spec.params, spec.pipeline or spec.rerunFrom",
    "IncompatibleCheckpoint": "the pipeline changed since the checkpoint: use spec.checkpoint.resume "
    "Compatible or Restart",
    "DeadlineExceeded": "raise spec.activeDeadlineSeconds",
}


def _record_end(
    r: _Round, spec: PipelineRunSpec, rec: AttemptRecord, outcome: Outcome, obs: Observed
) -> Decision | None:
    """Write down how the attempt ended and charge its budget; a Decision if the run is over."""
    st, d = r.st, r.d
    rec.outcome, rec.reason = outcome.outcome, outcome.reason
    rec.message = outcome.message or None
    rec.exit_code = outcome.exit_code
    rec.end_time = fmt(r.now)
    rec.stopping = None
    _apply_progress(d, outcome.report, rec.attempt)
    d.ended = (rec, outcome)
    pod = obs.pod
    if pod is not None and not pod_is_terminal(pod) and not obs.pod_gone:
        # The node vanished with the pod "running" (or the Job failed under it): remove
        # the leftover; fencing covers a process that is still alive.
        d.stops.append(
            Stop(rec.attempt, rec.job, grace_seconds=0 if obs.node_exists is False else None, reason=outcome.reason)
        )
    if outcome.charge is Charge.PREEMPTION:
        st.preemptions += 1
        d.events.append(
            Event(
                "Warning",
                "Preempted",
                f"attempt {rec.attempt} lost to the infrastructure "
                f"({outcome.reason}); resuming from the last checkpoint",
            )
        )
    elif outcome.charge is Charge.FAILURE:
        st.failures += 1
        d.events.append(
            Event(
                "Warning", "AttemptFailed", f"attempt {rec.attempt} failed ({outcome.reason}): {outcome.message}"[:1000]
            )
        )
    elif outcome.outcome is AttemptOutcome.SUPERSEDED:
        st.failures += 1  # bounded by maxFailures: a loop of superseded attempts must end
        d.events.append(Event("Warning", "Superseded", f"attempt {rec.attempt} found a newer owner of the run"))
    if outcome.outcome is AttemptOutcome.SUCCEEDED:
        if st.total_steps is not None:
            st.completed_steps = st.total_steps
        st.current_step = None
        return r.finish(Phase.SUCCEEDED, "Succeeded", f"all steps done in {rec.attempt} attempt(s)")
    if outcome.fatal:
        msg = f"attempt {rec.attempt}: {outcome.reason}: {outcome.message}".rstrip(": ")
        hint = _FATAL_HINTS.get(outcome.reason)
        return r.finish(Phase.FAILED, outcome.reason, f"{msg}; {hint}" if hint else msg)
    budget = exhausted_budget(spec.budgets, st.preemptions, st.failures)
    if budget:
        reason = "MaxFailuresExceeded" if st.failures > spec.budgets.max_failures else "MaxPreemptionsExceeded"
        return r.finish(Phase.FAILED, reason, budget)
    if outcome.charge is Charge.FAILURE or outcome.outcome is AttemptOutcome.SUPERSEDED:
        delay = failure_backoff(spec.budgets.backoff, st.failures)
        if delay > 0:
            st.next_attempt_time = fmt(r.now + dt.timedelta(seconds=delay))
    return None


def _start_next_attempt(r: _Round, run: Run, rerun_needed: bool) -> Decision:
    """Start attempt N+1, unless the deadline is spent or a failure backoff is still running."""
    st, d, spec, now = r.st, r.d, run.spec, r.now
    rerun_from = None
    if st.rerun is not None and st.attempt + 1 >= st.rerun.attempt and not _rerun_confirmed(st):
        # The re-run's first attempt (attempt 1 of a run created with rerunFrom), or a later
        # one when the re-run's first attempt ended before it committed anything: the
        # discard may not have happened, so the next attempt asks for it (it is idempotent).
        rerun_from = st.rerun.step
    if rerun_needed and spec.rerun_from is not None:
        rerun_from = spec.rerun_from
        st.rerun = RerunRecord(step=rerun_from, generation=r.generation, attempt=st.attempt + 1)
        st.preemptions = st.failures = 0
        st.next_attempt_time = st.completion_time = None
        st.message = None
        st.phase = Phase.RETRYING
        set_condition(
            st,
            ConditionType.SUCCEEDED,
            "Unknown",
            "RerunRequested",
            f"re-running from step {rerun_from}",
            r.generation,
            now,
        )
        d.events.append(Event("Normal", "RerunRequested", f"re-running from step {rerun_from}"))
    left = remaining_deadline(spec.active_deadline_seconds, parse(st.start_time), now)
    if left is not None and left <= 0:
        return r.finish(
            Phase.FAILED, "DeadlineExceeded", "spec.activeDeadlineSeconds reached before the run finished; raise it"
        )
    wake = parse(st.next_attempt_time)
    if wake is not None and wake > now:
        st.phase = Phase.RETRYING
        d.requeue_after = (wake - now).total_seconds()
        return r.done()

    attempt = st.attempt + 1
    d.create_job = build_job(run, attempt, r.config, rerun_from=rerun_from, active_deadline_seconds=left)
    st.spec_hash, st.result_generation = result_hash(spec), r.generation
    resumed_from = st.last_checkpoint.step if st.last_checkpoint and not rerun_from else None
    st.attempts.append(
        AttemptRecord(
            attempt=attempt,
            job=job_name(run.name, attempt),
            start_time=fmt(now),
            resumed_from=resumed_from,
            rerun_from=rerun_from,
        )
    )
    st.attempts = st.attempts[-50:]  # bounded: the status must stay small
    keep = max(1, r.config.kept_attempts)
    if attempt > keep:
        # Keep the Jobs (so the pods and logs) of the last `keep` attempts, this one included.
        d.prune_jobs.append(job_name(run.name, attempt - keep))
    st.attempt = attempt
    st.next_attempt_time = None
    st.start_time = st.start_time or fmt(now)
    st.phase = Phase.PENDING if attempt == 1 else Phase.RETRYING
    how = (
        f"resuming after step {resumed_from}"
        if resumed_from
        else (
            f"from the start (rerunFrom {rerun_from}: nothing to discard yet)"
            if rerun_from and st.rerun is not None and st.rerun.attempt == 1
            else f"re-running from step {rerun_from}"
            if rerun_from
            else "from the start"
        )
    )
    d.events.append(Event("Normal", "AttemptStarted", f"attempt {attempt} started ({how})"))
    if resumed_from:
        d.events.append(Event("Normal", "Resumed", f"attempt {attempt} resumes after step {resumed_from}"))
    return r.done()


def _reject_attempt(d: Decision, body: dict[str, Any], why: str, now: dt.datetime) -> None:
    """The API server refused the attempt's Job (422): undo the attempt and fail the run."""
    st = d.status
    if st.attempts and st.attempts[-1].attempt == st.attempt:
        st.attempts = st.attempts[:-1]
        st.attempt -= 1
    d.create_job = None
    d.events.clear()
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    _finish(
        d,
        Phase.FAILED,
        "JobRejected",
        f"the API server rejected the attempt's Job: {why}; fix the PipelineRun spec",
        generation,
        now,
    )
    _refresh_conditions(st, generation, now, None)

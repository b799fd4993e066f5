"""The kopf handlers: thin. They observe, call :func:`reconcile.decide`, and carry it out.

Every watch event of a PipelineRun, of its Jobs or of its pods only *pokes* the run:
a per-run worker (at most one at a time per run, coalescing bursts) reads the run,
observes its current attempt, decides, and acts. Status is the source of truth and
child names are deterministic, so a restarted operator simply reconciles again.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import random
import time
from typing import Any

import kopf

from respawn_operator import (
    ANNOTATION_RUN_NAME,
    ANNOTATION_STOPPED,
    GROUP,
    LABEL_ATTEMPT,
    LABEL_ROLE,
    LABEL_RUN_UID,
    PLURAL,
    VERSION,
    metrics,
)
from respawn_operator.classify import pod_is_terminal
from respawn_operator.config import OperatorConfig
from respawn_operator.credentials import NoCredentials
from respawn_operator.credentials import load as load_credentials
from respawn_operator.fanout import LABEL_PARENT_UID, decide_parent, parse_items
from respawn_operator.job_builder import build_cleanup_job, job_name
from respawn_operator.kube import (
    CLUSTER_PEERINGS,
    CONFIGMAPS,
    JOBS,
    NODES,
    PEERINGS,
    PIPELINERUNS,
    PODS,
    ApiError,
    ConflictError,
    ErrorKind,
    KubeClient,
    NameTaken,
    as_kopf_error,
    sort_api_error,
)
from respawn_operator.peering import CLUSTER, PeeringGate
from respawn_operator.reconcile import Decision, Observed, Stop, decide, reject_attempt
from respawn_operator.spec import (
    Phase,
    PipelineRunSpec,
    PipelineRunStatus,
    RetainPolicy,
    Run,
    SpecError,
    parse_spec,
    parse_status,
)
from respawn_operator.timeutil import fmt, now, parse
from respawn_operator.workqueue import Backoff, Retry, TokenBucket, WorkQueue

log = logging.getLogger("respawn.operator")
Key = tuple[str, str]
Facts = tuple[Any, ...]


def run_facts(body: dict[str, Any]) -> Facts:
    """What a reconcile of a run depends on: uid, generation, deletion, spec and status.

    Everything else (resourceVersion, kopf's finalizer and annotations, labels,
    managedFields) changes nothing :func:`reconcile.decide` or the Job builder reads.
    """
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        body.get("spec"),
        body.get("status"),
    )


PARENT_POKE_DELAY = 1.0
"""Seconds a fan-out parent waits after a child's event: a burst is one round, and its status is
written at most about once a second whatever the event rate."""


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """kopf keeps no diff-base ("last-handled-configuration") on the runs.

    A diff-base only serves create/update/field handlers; the operator has none (every
    event pokes the reconciler, which compares the state itself). kopf's annotation
    would cost a second PATCH of every new run. With an empty essence, old and new
    always agree: kopf sees NOOP (or RESUME) causes, and still runs the delete handler.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


def status_patch(new: PipelineRunStatus) -> dict[str, Any]:
    """Every status field as stored after a write of ``new`` (``None``: the field is absent)."""
    full = new.model_dump(by_alias=True, mode="json")
    lean = new.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {key: lean.get(key) for key in full}


class PodCache:
    """The last state of each attempt's pod, kept after the pod is deleted.

    A pod deleted by someone else (or garbage-collected) vanishes from the API; its last
    watched state still says how it ended.
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str, str], tuple[dict[str, Any], bool]] = {}

    def store(self, namespace: str, uid: str, attempt: str, pod: dict[str, Any], gone: bool) -> None:
        self._pods[(namespace, uid, attempt)] = (pod, gone)
        if attempt.isdigit():  # attempt N exists only once N-1 was classified: drop the older ones
            for key in [
                k for k in self._pods if k[:2] == (namespace, uid) and k[2].isdigit() and int(k[2]) < int(attempt)
            ]:
                del self._pods[key]

    def get(self, namespace: str, uid: str, attempt: int) -> tuple[dict[str, Any], bool] | None:
        return self._pods.get((namespace, uid, str(attempt)))

    def forget(self, namespace: str, uid: str) -> None:
        for key in [k for k in self._pods if k[0] == namespace and k[1] == uid]:
            del self._pods[key]


class ChildIndex:
    """Fan-out children by parent uid, kept from the PipelineRun watch (a lister).

    A parent reads its children here instead of listing them every round, which at
    thousands of items was one request and O(items) bytes a round. The first round of
    each parent after a start lists them once (the watch may not have delivered every
    child yet) and merges the answer; from then on watch events keep it current, and a
    parent lists again every `relist_seconds` as a resync. A child the parent created an
    instant ago may be missing for that instant: creating it again answers AlreadyExists.
    """

    def __init__(self, relist_seconds: float = 300.0) -> None:
        self.relist_seconds = relist_seconds
        self._children: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}
        """parent uid -> child name -> (its newest object, when it arrived)."""
        self._listed: dict[str, float] = {}
        """parent uid -> when its children were last listed."""

    def note(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """Take in a watch event of any run; only fan-out children are kept."""
        meta = obj.get("metadata") or {}
        parent = (meta.get("labels") or {}).get(LABEL_PARENT_UID)
        if not parent or not meta.get("name"):
            return
        if deleted:
            self._children.get(parent, {}).pop(meta["name"], None)
        else:
            self._children.setdefault(parent, {})[meta["name"]] = (obj, time.monotonic())

    def children(self, parent_uid: str) -> list[dict[str, Any]] | None:
        """The parent's children, or None when they must be listed first (see `merge_listed`)."""
        listed = self._listed.get(parent_uid)
        if listed is None or time.monotonic() - listed > self.relist_seconds:
            return None
        return [obj for obj, _ in self._children.get(parent_uid, {}).values()]

    def merge_listed(self, parent_uid: str, items: list[dict[str, Any]], started: float) -> list[dict[str, Any]]:
        """Merge a LIST begun at `started` (monotonic): a child's newer watched state wins,
        and a child the list lacks stays only if its event came after the list began."""
        known = self._children.get(parent_uid, {})
        merged: dict[str, tuple[dict[str, Any], float]] = {}
        for obj in items:
            name = obj["metadata"]["name"]
            mine = known.get(name)
            newer = mine is not None and _rv(mine[0]) >= _rv(obj) and mine[1] >= started
            merged[name] = mine if newer and mine is not None else (obj, started)
        for name, (obj, arrived) in known.items():
            if name not in merged and arrived > started:
                merged[name] = (obj, arrived)
        self._children[parent_uid] = merged
        self._listed[parent_uid] = time.monotonic()
        return [obj for obj, _ in merged.values()]

    def forget(self, parent_uid: str) -> None:
        self._children.pop(parent_uid, None)
        self._listed.pop(parent_uid, None)


def _rv(obj: dict[str, Any]) -> int:
    """A resourceVersion as a number where it is one (etcd's are); -1 where it is not."""
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(rv) if rv.isdigit() else -1


class Reconciler:
    """Per-run serialized, coalescing reconcile loop (a tiny work queue)."""

    def __init__(self, client: KubeClient, config: OperatorConfig, gate: PeeringGate | None = None) -> None:
        self.client = client
        self.config = config
        self.gate = gate or PeeringGate()
        """With --peering: whether this replica may act (kopf's pause does not stop our own loops)."""
        self.pods = PodCache()
        self.children = ChildIndex()
        self.phases = metrics.PhaseBook()
        self.queue: WorkQueue[Key] = WorkQueue(
            self._reconcile_safely, self._failed, Backoff(base=0.05, cap=300.0), TokenBucket(qps=50.0, burst=200)
        )
        self.known: set[Key] = set()
        self.bodies: dict[Key, dict[str, Any]] = {}
        """The newest state of each run known in order (watch events, our status writes),
        so a reconcile needs no GET. Absent: GET it. Read-only (kopf's event objects)."""
        self.pending: dict[Key, tuple[str | None, Facts]] = {}
        """A status write whose watch echo has not arrived: (its resourceVersion, the facts
        of the run it was decided on). Events until the echo are older than the write."""
        self.seen: dict[Key, Facts] = {}
        """The facts of the run as last reconciled (or as our status write left it): an
        event with the same facts (kopf's finalizer patch, our own echo) needs no round."""
        self.writing: dict[Key, list[tuple[str | None, dict[str, Any]]]] = {}
        """Events of a run that arrived while its status write was in flight (sorted out
        when the write answers: the watch and the answer race)."""

    # Run events --------------------------------------------------------------------------

    def note_run(self, key: Key, obj: dict[str, Any]) -> bool:
        """Take in a watch event's object of a run; ``True`` if it needs a reconcile."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        inflight = self.writing.get(key)
        if inflight is not None:
            inflight.append((rv, obj))
            return False  # the write's answer decides (a failed write reads the run afresh)
        facts = run_facts(obj)
        pending = self.pending.get(key)
        if pending is not None:
            written_rv, before = pending
            if (rv is not None and rv == written_rv) or facts == self.seen.get(key):
                del self.pending[key]  # the echo of our own status write (or what it wrote)
                self.bodies[key] = obj
                return False
            if facts == before:
                return False  # an event from before our write (e.g. kopf's finalizer patch)
            # Older or newer than our write? The watch cannot tell: read the run afresh.
            del self.pending[key]
            self.bodies.pop(key, None)
            return True
        self.bodies[key] = obj
        return facts != self.seen.get(key)

    def forget(self, key: Key) -> None:
        """The run is gone: drop what is known of it."""
        self.known.discard(key)
        self.bodies.pop(key, None)
        self.pending.pop(key, None)
        self.seen.pop(key, None)
        self.writing.pop(key, None)

    # Queue -----------------------------------------------------------------------------

    def poke(self, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile the run soon (after ``delay`` seconds); many pokes collapse into one run."""
        key = (namespace, name)
        self.known.add(key)
        self.queue.add(key, delay)

    async def _reconcile_safely(self, key: Key) -> float | None:
        """One round for the queue: the seconds until the next one, or None. API errors
        become `Retry` (no traceback); anything else is a bug, retried with backoff."""
        started = time.monotonic()
        try:
            return await self.reconcile(*key)
        except ApiError as exc:
            self.bodies.pop(key, None)  # whatever went wrong, read the run afresh
            kind, delay = sort_api_error(exc)
            metrics.API_ERRORS.labels(kind.value).inc()
            if kind is ErrorKind.CONFLICT:
                return 0.05  # our copy was stale: read again right away
            raise Retry(str(exc), after=delay) from exc
        except Exception:
            self.bodies.pop(key, None)
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    @staticmethod
    def _failed(key: Key, exc: BaseException, failures: int, delay: float) -> None:
        namespace, name = key
        # Retry: an API error; kopf's errors come from as_kopf_error (an API error, too).
        api = isinstance(exc, (Retry, kopf.TemporaryError, kopf.PermanentError))
        metrics.RECONCILE_ERRORS.labels("api" if api else "crash").inc()
        if isinstance(exc, Retry):
            log.warning("reconcile %s/%s: %s (retry %d in %.2fs)", namespace, name, exc, failures, delay)
        elif failures == 1:  # the traceback once; then one line per retry, ever further apart
            log.exception("reconcile %s/%s crashed; retrying in %.2fs", namespace, name, delay, exc_info=exc)
        else:
            log.error(
                "reconcile %s/%s crashed again (%d times): %s: %s; retrying in %.1fs",
                namespace,
                name,
                failures,
                type(exc).__name__,
                exc,
                delay,
            )

    async def shutdown(self) -> None:
        """Cancel pending and running reconciles, then close the client."""
        await self.queue.shutdown()
        await self.client.close()

    async def wait_active(self, namespace: str) -> None:
        """Return once this replica may act on ``namespace`` (at once without peering)."""
        while not self.gate.active(namespace):  # noqa: ASYNC110 - the gate changes from peering polls, not an event
            await asyncio.sleep(self.gate.interval)

    async def watch_peering_forever(self) -> None:
        """With --peering: read the peering object(s) every ``gate.interval`` s into the gate.

        Cluster-wide: the ClusterKopfPeering. Namespaced: the KopfPeering of every served
        namespace named outright and of every namespace a run was looked at in. When a
        peering turns active, the known runs it covers are looked at right away.
        """
        gate = self.gate
        assert gate.enabled and gate.name is not None
        while True:
            for key in gate.objects():
                try:
                    if key == CLUSTER:
                        peering = await self.client.get(CLUSTER_PEERINGS, gate.name)
                    else:
                        peering = await self.client.get(PEERINGS, gate.name, key)
                    before = gate.current(key)
                    after = gate.update(key, (peering or {}).get("status"), now(), missing=peering is None)
                except ApiError as exc:  # keep the last verdict; kopf cannot do better without the API
                    metrics.API_ERRORS.labels(sort_api_error(exc)[0].value).inc()
                    log.warning("peering: cannot read %s%s: %s", gate.name, f" in {key}" if key else "", exc)
                    continue
                except Exception:  # a bug must not stop the gate (it would pause or free us for good)
                    log.exception("peering: reading %s crashed", gate.name)
                    continue
                if after.active and not (before is not None and before.active):
                    for ns, name in list(self.known):
                        if gate.key(ns) == key:
                            self.poke(ns, name)
            await asyncio.sleep(gate.interval)

    async def resync_forever(self) -> None:
        """Poke every live run now and then: catches vanished nodes and lost watch events."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            for key in list(self.known):
                self.bodies.pop(key, None)  # a resync reads the run afresh (a watch event may be lost)
                self.poke(*key, delay=random.uniform(0, min(2.0, self.config.resync_seconds / 2)))

    # One round -----------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Observe, decide, act. Returns seconds until the next look, if one is due.

        The run comes from the watch (or our last status write) when its newest state is
        known in order; otherwise, and after any error or a resync, it is read with a GET.
        """
        key = (namespace, name)
        if not self.gate.active(namespace):
            self.known.add(key)
            return self.gate.interval  # a peer works (kopf paused us): no reads, no writes; look later
        body = self.bodies.get(key)
        if body is None:
            body = await self.client.get(PIPELINERUNS, name, namespace)
        if body is None:
            self.forget(key)
            self.phases.set(key, None)
            return None
        self.seen[key] = run_facts(body)
        if body["metadata"].get("deletionTimestamp"):
            return None  # the delete handler owns the run now
        if (body.get("spec") or {}).get("foreach") is not None:
            try:
                spec = parse_spec(body.get("spec") or {})
            except SpecError:
                pass  # decide() reports it like any invalid spec
            else:
                return await self.reconcile_parent(key, body, spec)
        obs = await self.observe(body)
        decision = decide(body, obs, now(), self.config)
        await self.execute(body, decision)
        metrics.count_finish(body.get("status"), decision.status)
        phase = decision.status.phase
        self.phases.set(key, phase.value if phase else None, metrics.pending_since(decision.status))
        if phase is not None and phase.finished:
            self.known.discard(key)
        else:
            self.known.add(key)
        return decision.requeue_after

    async def observe(self, body: dict[str, Any]) -> Observed:
        meta = body["metadata"]
        st = parse_status(body.get("status"))
        rec = st.attempts[-1] if st.attempts and st.attempts[-1].attempt == st.attempt else None
        if st.attempt == 0 or rec is None or rec.outcome is not None:
            return Observed()
        ns, uid = meta["namespace"], meta["uid"]
        job = await self.client.get(JOBS, job_name(meta["name"], st.attempt), ns)
        pods = await self.client.list(PODS, ns, labels={LABEL_RUN_UID: uid, LABEL_ATTEMPT: str(st.attempt)})
        pod: dict[str, Any] | None = None
        gone = False
        if pods:
            # An ended pod tells how the attempt ended, even if a replacement showed up.
            pods.sort(key=lambda p: (not pod_is_terminal(p), p["metadata"].get("creationTimestamp", "")))
            pod = pods[0]
        else:
            cached = self.pods.get(ns, uid, st.attempt)
            if cached is not None:
                pod, gone = cached[0], True
        node_exists: bool | None = None
        node_labels: dict[str, str] | None = None
        node_name = (pod or {}).get("spec", {}).get("nodeName")
        if pod is not None and node_name and not gone:
            try:
                node = await self.client.get(NODES, node_name)
                node_exists = node is not None
                if node is not None:  # a vanished node says nothing about spot
                    node_labels = node.get("metadata", {}).get("labels") or {}
            except ApiError as exc:
                metrics.API_ERRORS.labels(sort_api_error(exc)[0].value).inc()  # no RBAC on nodes: unknown
        return Observed(job=job, pod=pod, pod_gone=gone, node_exists=node_exists, node_labels=node_labels)

    async def execute(self, body: dict[str, Any], d: Decision) -> None:
        meta = body["metadata"]
        ns = meta["namespace"]
        for stop in d.stops:
            await self.stop_attempt(ns, meta["uid"], stop)
        if d.create_job is not None:
            await self.create_attempt_job(body, d)
        for old_job in d.prune_jobs:  # before the status write: a failed round decides it again
            await self.client.delete(JOBS, old_job, ns, propagation="Background")
        if d.retire_job is not None:
            await self.create_retire_job(ns, d.retire_job)
        await self.write_status(body, d.status)
        for ev in d.events:
            await self.post_event(body, ev.type, ev.reason, ev.message)
        if d.create_job is not None:
            metrics.ATTEMPTS_STARTED.inc()
        if d.ended is not None:
            rec, outcome = d.ended
            metrics.ATTEMPTS_ENDED.labels(outcome.outcome.value, outcome.reason).inc()
            if outcome.charge.value == "preemption":
                metrics.PREEMPTIONS.labels(outcome.reason).inc()
                lost = metrics.lost_seconds(rec, d.status)
                if lost is not None:
                    metrics.PREEMPTION_LOST_SECONDS.inc(lost)
            elif outcome.charge.value == "failure":
                metrics.FAILURES.labels(outcome.reason).inc()
            start, end = parse(rec.start_time), parse(rec.end_time)
            if start and end:
                metrics.ATTEMPT_SECONDS.labels(outcome.outcome.value).observe((end - start).total_seconds())

    async def create_retire_job(self, namespace: str, job: dict[str, Any]) -> None:
        """Create the Job that retires a failed run's checkpoint; AlreadyExists means it is done."""
        try:
            await self.client.create(JOBS, job, namespace)
        except ApiError as exc:
            if sort_api_error(exc)[0] is not ErrorKind.ALREADY_EXISTS:
                raise as_kopf_error(exc, f"create retire Job {job['metadata']['name']}") from exc

    async def reconcile_parent(self, key: Key, body: dict[str, Any], spec: PipelineRunSpec) -> float | None:
        """A fan-out parent (fanout.py): read its items and children, decide, carry it out."""
        assert spec.foreach is not None
        meta = body["metadata"]
        ns = meta["namespace"]
        items, error = spec.foreach.items, None
        if spec.foreach.items_from is not None:
            ref = spec.foreach.items_from.config_map_key_ref
            cm = await self.client.get(CONFIGMAPS, ref.name, ns)
            data = (cm or {}).get("data") or {}
            if cm is None:
                error = f"foreach.itemsFrom: ConfigMap {ref.name} not found in {ns}"
            elif ref.key not in data:
                error = f"foreach.itemsFrom: ConfigMap {ref.name} has no key {ref.key!r} (it has {sorted(data)})"
            else:
                items = parse_items(data[ref.key])
        children = self.children.children(meta["uid"])
        if children is None:
            started = time.monotonic()
            listed = await self.client.list(PIPELINERUNS, ns, labels={LABEL_PARENT_UID: meta["uid"]})
            children = self.children.merge_listed(meta["uid"], listed, started)
        d = decide_parent(body, spec, items, error, children, now())
        for child in d.create:
            try:
                await self.client.create(PIPELINERUNS, child, ns)
            except ApiError as exc:
                if sort_api_error(exc)[0] is not ErrorKind.ALREADY_EXISTS:
                    raise
        for name, child_spec in d.update:
            await self.client.request(
                "PATCH",
                PIPELINERUNS.path(ns, name),
                body=[{"op": "replace", "path": "/spec", "value": child_spec}],
                content_type="application/json-patch+json",
            )
        for name in d.delete:
            await self.client.delete(PIPELINERUNS, name, ns)
        await self.write_status(body, d.status)
        for type_, reason, message in d.events:
            await self.post_event(body, type_, reason, message)
        metrics.count_finish(body.get("status"), d.status)
        phase = d.status.phase
        self.phases.set(key, phase.value if phase else None)
        (self.known.discard if phase is not None and phase.finished else self.known.add)(key)
        return d.requeue_after

    async def write_status(self, body: dict[str, Any], status: PipelineRunStatus) -> None:
        """Replace the status, guarded by a JSON-patch ``test`` of the attempt number we read.

        The guard is on what matters (another writer started an attempt), not on the whole
        object's resourceVersion, which kopf's own finalizer and annotation patches bump.
        """
        meta = body["metadata"]
        old = body.get("status") or {}
        new = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        if new == old:
            return
        ops: list[dict[str, Any]] = []
        if "attempt" in old:
            ops.append({"op": "test", "path": "/status/attempt", "value": old["attempt"]})
        ops.append({"op": "add", "path": "/status", "value": new})
        key = (meta["namespace"], meta["name"])
        inflight: list[tuple[str | None, dict[str, Any]]] = []
        self.writing[key] = inflight
        try:
            written = await self.client.request(
                "PATCH",
                PIPELINERUNS.path(meta["namespace"], meta["name"], "status"),
                body=ops,
                content_type="application/json-patch+json",
            )
        except ApiError as exc:
            # A failed JSON-patch test answers 422 (or 409): someone else moved the run on.
            if sort_api_error(exc)[0] in (ErrorKind.CONFLICT, ErrorKind.INVALID):
                raise ConflictError(409, "Conflict", f"status changed under us: {exc.message}") from exc
            raise
        finally:
            if self.writing.get(key) is inflight:
                del self.writing[key]
        self._wrote(key, body, written, inflight)

    def _wrote(
        self, key: Key, body: dict[str, Any], written: dict[str, Any], inflight: list[tuple[str | None, dict[str, Any]]]
    ) -> None:
        """Our status write answered with the whole run: the newest state, no GET needed."""
        rv = (written.get("metadata") or {}).get("resourceVersion")
        if (written.get("metadata") or {}).get("uid") != body["metadata"].get("uid") or not rv:
            self.bodies.pop(key, None)  # not the run as stored: read it next time
            self.pending.pop(key, None)
            return
        before, after = run_facts(body), run_facts(written)
        self.seen[key] = after
        if rv in [event_rv for event_rv, _ in inflight]:
            # The echo beat the answer: the events after it are newer still.
            self.pending.pop(key, None)
            newest = inflight[-1][1]
        else:
            # Every event so far is older than the write (the watch is ordered); until its
            # echo arrives, the answer is the newest state.
            self.pending[key] = (rv, before)
            newest = written
        self.bodies[key] = newest
        if after[:4] != before[:4] or run_facts(newest) != after:
            self.poke(*key)  # the run changed while we decided: look again

    async def create_attempt_job(self, body: dict[str, Any], d: Decision) -> None:
        job = d.create_job
        assert job is not None
        ns, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
        try:
            await self.client.create(JOBS, job, ns)
        except ApiError as exc:
            kind, _ = sort_api_error(exc)
            if kind is ErrorKind.ALREADY_EXISTS:
                existing = await self.client.get(JOBS, job["metadata"]["name"], ns)
                owner = ((existing or {}).get("metadata", {}).get("labels") or {}).get(LABEL_RUN_UID)
                if existing is not None and owner == uid:
                    return  # created before a restart: adopt it
                raise NameTaken(
                    f"job {job['metadata']['name']} belongs to another run (waiting for its garbage collection)"
                ) from exc
            if kind is ErrorKind.INVALID:
                # The Job we built from this spec is rejected: the run cannot start.
                reject_attempt(d, body, exc.message, now())
                return
            raise

    async def stop_attempt(self, namespace: str, uid: str, stop: Stop) -> None:
        """Stop an attempt, keeping its Job and pod (and so its log) unless it is forced.

        A started pod gets ``spec.activeDeadlineSeconds: 1`` (a running pod's deadline may be
        lowered, never raised) and the ``respawn.dev/stopped`` annotation in one merge patch:
        kubelet sends SIGTERM, waits the grace period, and marks the pod Failed with reason
        DeadlineExceeded; the pod object stays. Forced (grace 0), or when no pod of the
        attempt ever started (nothing to keep; a pending pod has no deadline clock), the Job
        and its pods are deleted.
        """
        pods = await self.client.list(PODS, namespace, labels={LABEL_RUN_UID: uid, LABEL_ATTEMPT: str(stop.attempt)})

        def started(pod: dict[str, Any]) -> bool:
            return bool((pod.get("status") or {}).get("startTime"))

        if stop.grace_seconds == 0 or not any(pod_is_terminal(p) or started(p) for p in pods):
            await self.client.delete(JOBS, stop.job, namespace, propagation="Background")
            for pod in pods:
                if pod_is_terminal(pod) and stop.grace_seconds != 0:
                    continue
                await self.client.delete(PODS, pod["metadata"]["name"], namespace, grace_seconds=stop.grace_seconds)
            return
        for pod in pods:
            name = pod["metadata"]["name"]
            if pod_is_terminal(pod) or pod["metadata"].get("deletionTimestamp"):
                continue  # over, or going anyway
            if not started(pod):
                await self.client.delete(PODS, name, namespace)  # never ran: no log to keep
                continue
            try:
                await self.client.request(
                    "PATCH",
                    PODS.path(namespace, name),
                    body={
                        "metadata": {"annotations": {ANNOTATION_STOPPED: stop.reason}},
                        "spec": {"activeDeadlineSeconds": 1},
                    },
                    content_type="application/merge-patch+json",
                )
            except ApiError as exc:
                if sort_api_error(exc)[0] is not ErrorKind.NOT_FOUND:
                    raise

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on the run; losing one is not worth failing a reconcile."""
        meta = body["metadata"]
        stamp = fmt(now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": body.get("kind", "PipelineRun"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "respawn-operator"},
            "reportingComponent": "respawn.dev/operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)
        except ApiError as exc:
            metrics.API_ERRORS.labels(sort_api_error(exc)[0].value).inc()
            log.debug("event %s on %s/%s not posted: %s", reason, meta["namespace"], meta["name"], exc)


@dataclasses.dataclass
class Settings:
    """What the command line says about this process; ``cli`` sets it before ``kopf.run``."""

    identity: str = ""
    """This replica's peering identity, the one kopf.run(identity=...) was given."""
    peering: str | None = None
    """The peering object's name with --peering; ``None``: standalone, always active."""
    priority: int = 0
    clusterwide: bool = True
    namespaces: tuple[str, ...] = ()


SETTINGS = Settings()


@dataclasses.dataclass
class _State:
    reconciler: Reconciler | None = None
    resync: asyncio.Task[None] | None = None
    peering: asyncio.Task[None] | None = None
    metrics_started: bool = False


STATE = _State()


def _reconciler() -> Reconciler:
    if STATE.reconciler is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return STATE.reconciler


@kopf.on.login()
def login(logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo:
    """kopf's own client logs in with the same credentials as ours (credentials.py).

    kopf calls this again whenever the API answers 401, so a rotated token is picked up.
    """
    try:
        creds = load_credentials()
    except NoCredentials as exc:
        raise kopf.PermanentError(str(exc)) from None
    logger.info(f"API credentials: {creds.source}, server {creds.host}")
    return creds.connection_info()  # type: ignore[no-any-return]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = "respawn.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="respawn.dev")
    settings.persistence.diffbase_storage = NoDiffBaseStorage()  # no create/update handlers: no diff-base
    settings.posting.level = logging.WARNING
    settings.watching.reconnect_backoff = 1.0
    settings.batching.batch_window = 0.01  # we coalesce per run ourselves; do not wait 0.1 s per event
    settings.peering.lifetime = config.peering_lifetime_seconds  # only used with --peering
    try:
        client = KubeClient.from_environment(TokenBucket(qps=config.api_qps, burst=config.api_burst))
    except NoCredentials as exc:
        raise kopf.PermanentError(str(exc)) from None
    gate = PeeringGate(
        identity=SETTINGS.identity,
        priority=SETTINGS.priority,
        name=SETTINGS.peering,
        clusterwide=SETTINGS.clusterwide,
        namespaces=SETTINGS.namespaces,
        lifetime=config.peering_lifetime_seconds,
    )
    STATE.reconciler = Reconciler(client, config, gate)
    loop = asyncio.get_running_loop()
    STATE.resync = loop.create_task(STATE.reconciler.resync_forever())
    if gate.enabled:
        STATE.peering = loop.create_task(STATE.reconciler.watch_peering_forever())
    if config.metrics_port and not STATE.metrics_started:
        import prometheus_client

        prometheus_client.start_http_server(config.metrics_port)
        STATE.metrics_started = True


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in (STATE.resync, STATE.peering):
        if task is not None:
            task.cancel()
    if STATE.reconciler is not None:
        await STATE.reconciler.shutdown()
    STATE.reconciler = None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_run_event(event: kopf.RawEvent, name: str, namespace: str | None, uid: str, **_: Any) -> None:
    assert namespace is not None  # PipelineRuns are namespaced
    rec = _reconciler()
    key = (namespace, name)
    obj: Any = event.get("object")  # the run as raw JSON (kopf types it as a partial RawBody)
    if isinstance(obj, dict):
        rec.children.note(obj, deleted=event.get("type") == "DELETED")
    if event.get("type") == "DELETED":
        rec.forget(key)
        rec.phases.set(key, None)
        rec.pods.forget(namespace, uid)
        rec.children.forget(uid)
        if isinstance(obj, dict):
            poke_parent(rec, namespace, obj)  # a deleted child changes its parent's counts too
        return
    if not isinstance(obj, dict) or rec.note_run(key, obj):
        rec.poke(namespace, name)  # not for the echo of our own write, nor for kopf's metadata patches
    if isinstance(obj, dict):
        poke_parent(rec, namespace, obj)


def poke_parent(rec: Reconciler, namespace: str, obj: dict[str, Any]) -> None:
    """A fan-out child changed: its parent counts again (pokes within the delay coalesce)."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "PipelineRun" and owner.get("controller"):
            rec.poke(namespace, owner["name"], delay=PARENT_POKE_DELAY)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RUN_UID: kopf.PRESENT, LABEL_ATTEMPT: kopf.PRESENT})
async def on_job_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, annotations: kopf.Annotations, **_: Any
) -> None:
    assert namespace is not None  # Jobs are namespaced
    run = annotations.get(ANNOTATION_RUN_NAME)
    # A Job matters once it has conditions (ended, suspended) or is gone, not when it appears.
    if run and (
        event.get("type") == "DELETED"
        or (body.get("status") or {}).get("conditions")
        or (body.get("spec") or {}).get("suspend")
    ):
        _reconciler().poke(namespace, run)


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN_UID: kopf.PRESENT, LABEL_ATTEMPT: kopf.PRESENT})
async def on_pod_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    annotations: kopf.Annotations,
    **_: Any,
) -> None:
    assert namespace is not None  # pods are namespaced
    rec = _reconciler()
    pod = copy.deepcopy(dict(body))
    rec.pods.store(namespace, labels[LABEL_RUN_UID], labels[LABEL_ATTEMPT], pod, event.get("type") == "DELETED")
    run = annotations.get(ANNOTATION_RUN_NAME)
    if run:
        rec.poke(namespace, run)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, name: str, namespace: str | None, uid: str, **_: Any) -> None:
    """Stop the run's pods, then clean its checkpoint per ``checkpoint.retain`` with a short Job.

    It waits in place (polling once a second) rather than raising TemporaryError, which
    kopf would log as an error although nothing is wrong. Idempotent: after an operator
    restart kopf calls it again and it picks up where it was.
    """
    assert namespace is not None  # PipelineRuns are namespaced
    rec = _reconciler()
    client, config = rec.client, rec.config
    started = time.monotonic()
    try:
        await rec.wait_active(namespace)  # kopf may pause us mid-handler: a peer works then
        for job in await client.list(JOBS, namespace, labels={LABEL_RUN_UID: uid}):
            if (job["metadata"].get("labels") or {}).get(LABEL_ROLE) == "attempt":
                await client.delete(JOBS, job["metadata"]["name"], namespace, propagation="Background")
        while True:
            alive = [
                p
                for p in await client.list(PODS, namespace, labels={LABEL_RUN_UID: uid})
                if LABEL_ATTEMPT in (p["metadata"].get("labels") or {}) and not pod_is_terminal(p)
            ]
            if not alive:
                break
            await rec.wait_active(namespace)
            for pod in alive:
                if not pod["metadata"].get("deletionTimestamp"):
                    await client.delete(PODS, pod["metadata"]["name"], namespace)
            if time.monotonic() - started > config.cleanup_timeout_seconds:
                raise kopf.TemporaryError(
                    f"pods {', '.join(p['metadata']['name'] for p in alive)} do not stop; retrying", delay=10
                )
            await asyncio.sleep(1)
        cleanup_job = _cleanup_job(body, config)
        if cleanup_job is None:
            return
        job_name_ = cleanup_job["metadata"]["name"]
        await rec.wait_active(namespace)
        if await client.get(JOBS, job_name_, namespace) is None:
            try:
                await client.create(JOBS, cleanup_job, namespace)
            except ApiError as exc:
                if sort_api_error(exc)[0] is not ErrorKind.ALREADY_EXISTS:
                    raise
        while True:
            existing = await client.get(JOBS, job_name_, namespace) or {}
            conds = {
                c.get("type")
                for c in (existing.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            }
            if "Complete" in conds:
                return
            if "Failed" in conds or not existing or time.monotonic() - started > config.cleanup_timeout_seconds:
                await rec.wait_active(namespace)
                await rec.post_event(
                    dict(body),
                    "Warning",
                    "CleanupFailed",
                    f"checkpoint cleanup Job {job_name_} did not complete; the checkpoint "
                    "may remain in storage: remove it with `pipeline-runtime cleanup`",
                )
                return
            await asyncio.sleep(1)
    except ApiError as exc:
        raise as_kopf_error(exc, f"deleting PipelineRun {namespace}/{name}") from exc
    finally:
        rec.pods.forget(namespace, uid)


def _cleanup_job(body: kopf.Body, config: OperatorConfig) -> dict[str, Any] | None:
    """The cleanup Job for a deleted run, or ``None`` when its checkpoint stays."""
    meta = body["metadata"]
    st = parse_status(dict(body.get("status") or {}))
    if st.attempt == 0:
        return None  # nothing ever ran, nothing was stored
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return None
    retain = spec.checkpoint.retain
    if retain is RetainPolicy.ALWAYS or (retain is RetainPolicy.ON_FAILURE and st.phase is Phase.FAILED):
        return None
    run = Run(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        spec=spec,
        status=st,
    )
    return build_cleanup_job(run, config, purge=True)


__all__ = ["SETTINGS", "Reconciler", "Settings", "status_patch"]

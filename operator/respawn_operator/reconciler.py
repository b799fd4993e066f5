"""One round per run at a time: observe, decide, act.

Every watch event of a PipelineRun, of its Jobs or of its pods only *pokes* the run: the
work queue (workqueue.py: per-run serialized, coalescing, exponential backoff per run, a
global rate limit) runs a round, which reads the run from `RunCache`, observes its current
attempt, calls the pure `reconcile.decide` (or `fanout.decide_parent` for a fan-out
parent) and hands the whole decision to `Executor`. Status is the source of truth and
child names are deterministic, so a restarted operator simply reconciles again.

Priority (issue 14): a round that ends an attempt the infrastructure took and starts the
next one is *urgent*. The queue asks `urgent(key)`, which reads only the watch caches: the
run's current attempt is open and a pod of it, as last watched, was preempted, evicted or
lost its node (`classify.lost_to_infrastructure`). Such a round takes its round token and
each of its requests takes the client's token ahead of normal ones (workqueue.py), so a
preempted item's next Job does not queue behind the new items' requests when the client
runs at its qps. A loss only the round itself sees (a vanished node read with a GET, a
Kueue eviction on the Job, a deleted Job) makes the rest of that round urgent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from typing import Any

import kopf

from respawn_operator import LABEL_ATTEMPT, LABEL_RUN_UID, metrics
from respawn_operator.classify import Charge, job_finished, lost_to_infrastructure, pod_is_terminal
from respawn_operator.config import OperatorConfig
from respawn_operator.executor import Executor, JobRejected, StaleRun
from respawn_operator.fanout import LABEL_PARENT_UID, decide_parent, parse_items
from respawn_operator.job_builder import job_name
from respawn_operator.kube import (
    CLUSTER_PEERINGS,
    CONFIGMAPS,
    JOBS,
    NODES,
    PEERINGS,
    PIPELINERUNS,
    PODS,
    ApiError,
    ErrorKind,
    KubeClient,
    sort_api_error,
)
from respawn_operator.listers import ChildIndex, NodeCache, PodCache
from respawn_operator.peering import CLUSTER, PeeringGate
from respawn_operator.reconcile import Observed, decide
from respawn_operator.runcache import Key, RunCache
from respawn_operator.spec import PipelineRunSpec, SpecError, parse_spec, parse_status
from respawn_operator.timeutil import now
from respawn_operator.workqueue import Backoff, Retry, TokenBucket, WorkQueue, hurry

log = logging.getLogger("respawn.operator")


class Reconciler:
    """The operator's loop: a work queue of runs, their cache, the listers, an executor."""

    def __init__(self, client: KubeClient, config: OperatorConfig, gate: PeeringGate | None = None) -> None:
        self.client = client
        self.config = config
        self.gate = gate or PeeringGate()
        """With --peering: whether this replica may act (kopf's pause does not stop our own loops)."""
        self.runs = RunCache()
        self.pods = PodCache(relist_seconds=config.resync_seconds)
        self.nodes = NodeCache()
        self.children = ChildIndex()
        self.phases = metrics.PhaseBook()
        self.executor = Executor(client, self.runs, self.poke)
        # Rounds a second follow the client's budget: every round makes at least one request,
        # so more rounds than requests could only queue in the client, and fewer (a fixed 50
        # before) left a client raised to 200 qps idle while new items waited (issue 14).
        rounds = TokenBucket(qps=config.api_qps, burst=max(config.api_burst, 200))
        self.queue: WorkQueue[Key] = WorkQueue(
            self._reconcile_safely, self._failed, Backoff(base=0.05, cap=300.0), rounds, self.urgent
        )

    # Run events --------------------------------------------------------------------------

    def note_run(self, key: Key, obj: dict[str, Any]) -> bool:
        """Take in a watch event's object of a run; ``True`` if it needs a reconcile."""
        return self.runs.note(key, obj)

    def forget(self, key: Key) -> None:
        """The run is gone: drop what is known of it."""
        self.runs.forget(key)

    # Queue -----------------------------------------------------------------------------

    def poke(self, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile the run soon (after ``delay`` seconds); many pokes collapse into one run."""
        key = (namespace, name)
        self.runs.known.add(key)
        self.queue.add(key, delay)

    def urgent(self, key: Key) -> bool:
        """Whether the run's next round is urgent (module docstring): from the caches only,
        as the queue asks on every poke of a waiting run."""
        body = self.runs.bodies.get(key)
        if body is None:
            return False
        status = body.get("status") or {}
        attempt, records = status.get("attempt"), status.get("attempts") or []
        if not isinstance(attempt, int) or not records or records[-1].get("attempt") != attempt:
            return False
        if records[-1].get("outcome") is not None:
            return False
        for pod, gone in self.pods.watched(key[0], body["metadata"]["uid"], attempt):
            node = (pod.get("spec") or {}).get("nodeName")
            hit = self.nodes.get(node) if node else None
            if lost_to_infrastructure(pod, pod_gone=gone, node_exists=hit is None or hit[0] is not None):
                return True
        return False

    async def _reconcile_safely(self, key: Key) -> float | None:
        """One round for the queue: the seconds until the next one, or None. API errors
        become `Retry` (no traceback); anything else is a bug, retried with backoff."""
        started = time.monotonic()
        try:
            return await self.reconcile(*key)
        except StaleRun:
            self.runs.stale(key)
            return 0.05  # our copy was stale: read again right away
        except ApiError as exc:
            self.runs.stale(key)  # whatever went wrong, read the run afresh
            kind, delay = sort_api_error(exc)
            metrics.API_ERRORS.labels(kind.value).inc()
            if kind is ErrorKind.CONFLICT:
                return 0.05
            raise Retry(str(exc), after=delay) from exc
        except Exception:
            self.runs.stale(key)
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
                    for ns, name in list(self.runs.known):
                        if gate.key(ns) == key:
                            self.poke(ns, name)
            await asyncio.sleep(gate.interval)

    async def resync_forever(self) -> None:
        """Poke every live run now and then: catches vanished nodes and lost watch events."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            for key in list(self.runs.known):
                self.runs.stale(key)  # a resync reads the run afresh (a watch event may be lost)
                self.poke(*key, delay=random.uniform(0, min(2.0, self.config.resync_seconds / 2)))

    # One round -----------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Observe, decide, act. Returns seconds until the next look, if one is due.

        The run comes from the watch (or our last status write) when its newest state is
        known in order; otherwise, and after any error or a resync, it is read with a GET.
        """
        key = (namespace, name)
        if not self.gate.active(namespace):
            self.runs.known.add(key)
            return self.gate.interval  # a peer works (kopf paused us): no reads, no writes; look later
        body = self.runs.bodies.get(key)
        if body is None:
            body = await self.client.get(PIPELINERUNS, name, namespace)
        if body is None:
            self.forget(key)
            self.phases.set(key, None)
            return None
        self.runs.reconciling(key, body)
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
        if decision.ended is not None and decision.ended[1].charge is Charge.PREEMPTION:
            hurry()  # lost as only this round saw (its node, its Job): the next Job goes first
        try:
            await self.executor.execute(body, decision)
        except JobRejected as exc:
            # The API server refused the Job this decision built: decide again knowing it.
            decision = decide(body, dataclasses.replace(obs, job_rejected=exc.why), now(), self.config)
            await self.executor.execute(body, decision)
        metrics.count_finish(body.get("status"), decision.status)
        phase = decision.status.phase
        self.phases.set(key, phase.value if phase else None, metrics.pending_since(decision.status))
        finished = phase is not None and phase.finished
        self._track(key, finished)
        if finished:
            self.pods.forget(namespace, body["metadata"]["uid"])  # a rerun's attempt lists its pods anew
        return decision.requeue_after

    def _track(self, key: Key, finished: bool) -> None:
        """A finished run leaves the resync set; any other stays in it."""
        if finished:
            self.runs.known.discard(key)
        else:
            self.runs.known.add(key)

    async def observe(self, body: dict[str, Any]) -> Observed:
        meta = body["metadata"]
        st = parse_status(body.get("status"))
        rec = st.attempts[-1] if st.attempts and st.attempts[-1].attempt == st.attempt else None
        if st.attempt == 0 or rec is None or rec.outcome is not None:
            return Observed()
        ns, uid = meta["namespace"], meta["uid"]
        job = await self.client.get(JOBS, job_name(meta["name"], st.attempt), ns)
        seen = self.pods.get(ns, uid, st.attempt)  # the pod watch's, between relists
        if seen is not None and job_finished(job) and not any(gone or pod_is_terminal(p) for p, gone in seen):
            # The Job, read just now, is over, but the pod watch has not shown its pod end:
            # the watch is behind (a dropped stream, a slow one). The ended pod decides the
            # outcome (its exit code and report: a Complete Job alone says nothing of the
            # steps, a Failed one nothing of a preemption), so list the pods afresh.
            seen = None
        if seen is None:
            started = time.monotonic()
            listed = await self.client.list(PODS, ns, labels={LABEL_RUN_UID: uid, LABEL_ATTEMPT: str(st.attempt)})
            seen = self.pods.merge_listed(ns, uid, st.attempt, listed, started)
        pods = [p for p, gone in seen if not gone]
        pod: dict[str, Any] | None = None
        gone = False
        if pods:
            # An ended pod tells how the attempt ended, even if a replacement showed up.
            pods.sort(key=lambda p: (not pod_is_terminal(p), p["metadata"].get("creationTimestamp", "")))
            pod = pods[0]
        elif seen:
            pod, gone = seen[-1][0], True  # seen, and deleted since: the last one seen says how it ended
        node_exists: bool | None = None
        node_labels: dict[str, str] | None = None
        node_name = (pod or {}).get("spec", {}).get("nodeName")
        if pod is not None and node_name and not gone:
            try:
                hit = self.nodes.get(node_name)
                if hit is None:
                    hit = (await self.client.get(NODES, node_name),)
                    self.nodes.put(node_name, hit[0])
                node = hit[0]
                node_exists = node is not None
                if node is not None:  # a vanished node says nothing about spot
                    node_labels = node.get("metadata", {}).get("labels") or {}
            except ApiError as exc:
                metrics.API_ERRORS.labels(sort_api_error(exc)[0].value).inc()  # no RBAC on nodes: unknown
        return Observed(job=job, pod=pod, pod_gone=gone, node_exists=node_exists, node_labels=node_labels)

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
        await self.executor.execute_parent(body, d)
        metrics.count_finish(body.get("status"), d.status)
        phase = d.status.phase
        self.phases.set(key, phase.value if phase else None)
        self._track(key, phase is not None and phase.finished)
        return d.requeue_after

"""Carry out a decision: the only place the reconciler writes to the API.

`reconcile.decide` and `fanout.decide_parent` say what to do, whole, before anything is
done; `Executor` does it in a fixed order (stop, create, prune, retire, write the status,
post events) so a round that fails midway is decided again from what it left. It decides
nothing itself: when the API server refuses the attempt's Job, it raises `JobRejected`
and the reconciler decides again knowing that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from respawn_operator import ANNOTATION_STOPPED, LABEL_ATTEMPT, LABEL_RUN_UID, metrics
from respawn_operator.classify import pod_is_terminal
from respawn_operator.events import build_event
from respawn_operator.fanout import ParentDecision
from respawn_operator.kube import (
    JOBS,
    PIPELINERUNS,
    PODS,
    ApiError,
    ErrorKind,
    KubeClient,
    as_kopf_error,
    sort_api_error,
)
from respawn_operator.reconcile import Decision, Stop
from respawn_operator.runcache import RunCache
from respawn_operator.spec import PipelineRunStatus
from respawn_operator.timeutil import now
from respawn_operator.workqueue import Retry

log = logging.getLogger("respawn.operator")

NAME_TAKEN_RETRY_SECONDS = 2.0


class StaleRun(Exception):
    """Our status write was refused because the run moved on under us (its attempt number
    changed): read it afresh and decide again."""


class JobRejected(Exception):
    """The API server refused the attempt's Job as invalid (422): the spec cannot start."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Executor:
    def __init__(self, client: KubeClient, runs: RunCache, poke: Callable[[str, str], None]) -> None:
        self.client = client
        self.runs = runs
        self.poke = poke
        """Called with (namespace, name) when a status write shows the run changed meanwhile."""

    async def execute(self, body: dict[str, Any], d: Decision) -> None:
        meta = body["metadata"]
        ns = meta["namespace"]
        for stop in d.stops:
            await self.stop_attempt(ns, meta["uid"], stop)
        if d.create_job is not None:
            await self.create_attempt_job(body, d.create_job)
        for old_job in d.prune_jobs:  # before the status write: a failed round decides it again
            await self.client.delete(JOBS, old_job, ns, propagation="Background")
        if d.retire_job is not None:
            await self.create_retire_job(ns, d.retire_job)
        await self.write_status(body, d.status)
        for ev in d.events:
            await self.post_event(body, ev.type, ev.reason, ev.message)
        metrics.count_decision(d)

    async def execute_parent(self, body: dict[str, Any], d: ParentDecision) -> None:
        ns = body["metadata"]["namespace"]
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

    async def create_attempt_job(self, body: dict[str, Any], job: dict[str, Any]) -> None:
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
                # A run deleted and re-created under the same name: the old run's Job waits
                # for garbage collection. Nothing is wrong; look again shortly.
                raise Retry(
                    f"job {job['metadata']['name']} belongs to another run (waiting for its garbage collection)",
                    after=NAME_TAKEN_RETRY_SECONDS,
                ) from exc
            if kind is ErrorKind.INVALID:
                raise JobRejected(exc.message) from exc
            raise

    async def create_retire_job(self, namespace: str, job: dict[str, Any]) -> None:
        """Create the Job that retires a failed run's checkpoint; AlreadyExists means it is done."""
        try:
            await self.client.create(JOBS, job, namespace)
        except ApiError as exc:
            if sort_api_error(exc)[0] is not ErrorKind.ALREADY_EXISTS:
                raise as_kopf_error(exc, f"create retire Job {job['metadata']['name']}") from exc

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
        with self.runs.writing_status(key) as inflight:
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
                    raise StaleRun(f"status changed under us: {exc.message}") from exc
                raise
        if self.runs.wrote(key, body, written, inflight):
            self.poke(*key)  # the run changed while we decided: look again

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on the run; losing one is not worth failing a reconcile."""
        meta = body["metadata"]
        event = build_event(body, type_, reason, message, now())
        try:
            await self.client.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)
        except ApiError as exc:
            metrics.API_ERRORS.labels(sort_api_error(exc)[0].value).inc()
            log.debug("event %s on %s/%s not posted: %s", reason, meta["namespace"], meta["name"], exc)

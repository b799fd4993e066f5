"""The kopf handlers: thin. Watch events poke the reconciler (reconciler.py); the delete
handler stops a deleted run's pods and cleans its checkpoint.

What the process was started with (`Settings`, from the command line) and what it runs
(the `Reconciler` and its loops) live in kopf's per-operator ``memo``: cli.py passes
``kopf.run(memo=kopf.Memo(settings=...))``, the startup handler puts the reconciler in it,
and every handler takes it from there. No module-level state.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from typing import Any

import kopf

from respawn_operator import (
    ANNOTATION_RUN_NAME,
    GROUP,
    LABEL_ATTEMPT,
    LABEL_ROLE,
    LABEL_RUN_UID,
    PLURAL,
    VERSION,
)
from respawn_operator.classify import pod_is_terminal
from respawn_operator.config import OperatorConfig
from respawn_operator.credentials import NoCredentials
from respawn_operator.credentials import load as load_credentials
from respawn_operator.job_builder import build_cleanup_job
from respawn_operator.kube import JOBS, PODS, ApiError, ErrorKind, KubeClient, as_kopf_error, sort_api_error
from respawn_operator.peering import PeeringGate
from respawn_operator.reconciler import Reconciler
from respawn_operator.spec import Phase, RetainPolicy, Run, SpecError, parse_spec, parse_status
from respawn_operator.workqueue import TokenBucket

log = logging.getLogger("respawn.operator")


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


@dataclasses.dataclass
class Settings:
    """What the command line says about this process; ``cli`` puts it in ``memo.settings``."""

    identity: str = ""
    """This replica's peering identity, the one kopf.run(identity=...) was given."""
    peering: str | None = None
    """The peering object's name with --peering; ``None``: standalone, always active."""
    priority: int = 0
    clusterwide: bool = True
    namespaces: tuple[str, ...] = ()


@dataclasses.dataclass
class Running:
    """What the startup handler started (``memo.running``); the cleanup handler stops it."""

    reconciler: Reconciler
    tasks: list[asyncio.Task[None]]


def _reconciler(memo: kopf.Memo) -> Reconciler:
    running: Running | None = memo.get("running")
    if running is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return running.reconciler


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
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    cli: Settings = memo.get("settings") or Settings()  # `kopf run handlers.py`: standalone defaults
    gate = PeeringGate(
        identity=cli.identity,
        priority=cli.priority,
        name=cli.peering,
        clusterwide=cli.clusterwide,
        namespaces=cli.namespaces,
        lifetime=config.peering_lifetime_seconds,
    )
    rec = Reconciler(client, config, gate)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(rec.resync_forever())]
    if gate.enabled:
        tasks.append(loop.create_task(rec.watch_peering_forever()))
    memo.running = Running(rec, tasks)
    if config.metrics_port and not memo.get("metrics_started"):
        import prometheus_client

        prometheus_client.start_http_server(config.metrics_port)
        memo.metrics_started = True


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    running: Running | None = memo.get("running")
    if running is None:
        return
    for task in running.tasks:
        task.cancel()
    await running.reconciler.shutdown()
    memo.running = None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_run_event(
    event: kopf.RawEvent, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    assert namespace is not None  # PipelineRuns are namespaced
    rec = _reconciler(memo)
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
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    annotations: kopf.Annotations,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None  # Jobs are namespaced
    run = annotations.get(ANNOTATION_RUN_NAME)
    # A Job matters once it has conditions (ended, suspended) or is gone, not when it appears.
    if run and (
        event.get("type") == "DELETED"
        or (body.get("status") or {}).get("conditions")
        or (body.get("spec") or {}).get("suspend")
    ):
        _reconciler(memo).poke(namespace, run)


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN_UID: kopf.PRESENT, LABEL_ATTEMPT: kopf.PRESENT})
async def on_pod_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    annotations: kopf.Annotations,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None  # pods are namespaced
    rec = _reconciler(memo)
    pod = copy.deepcopy(dict(body))
    rec.pods.store(namespace, labels[LABEL_RUN_UID], labels[LABEL_ATTEMPT], pod, event.get("type") == "DELETED")
    run = annotations.get(ANNOTATION_RUN_NAME)
    if run:
        rec.poke(namespace, run)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Stop the run's pods, then clean its checkpoint per ``checkpoint.retain`` with a short Job.

    It waits in place (polling once a second) rather than raising TemporaryError, which
    kopf would log as an error although nothing is wrong. Idempotent: after an operator
    restart kopf calls it again and it picks up where it was.
    """
    assert namespace is not None  # PipelineRuns are namespaced
    rec = _reconciler(memo)
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
                await rec.executor.post_event(
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


__all__ = ["Settings"]

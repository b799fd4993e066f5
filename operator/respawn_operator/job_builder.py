"""Pure builders of the Jobs the operator creates: one per attempt, and the cleanup Job.

No API calls here: ``build_job(run, attempt, config) -> dict``, unit-tested as a plain
function. Names are deterministic so that a create that races a restart answers
409 AlreadyExists instead of starting a second attempt.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pipeline_runtime import contracts as c
from respawn_operator import (
    ANNOTATION_RUN_NAME,
    API_VERSION,
    KIND,
    LABEL_ATTEMPT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_RUN_UID,
)
from respawn_operator.budgets import spot_allowed
from respawn_operator.classify import CONTAINER_NAME
from respawn_operator.config import OperatorConfig
from respawn_operator.spec import Run

KUEUE_LABEL_PREFIX = "kueue.x-k8s.io/"
"""podTemplate labels with this prefix (e.g. ``kueue.x-k8s.io/queue-name``) go on the Job too."""
MAX_NAME = 63
"""Job names become the ``job-name`` label of their pods, so they must fit a label value."""


def short_name(base: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """``base + suffix`` if it fits in ``limit``, else ``base`` cut and tagged with a hash of it.

    Deterministic: the same inputs give the same name on every operator replica and restart.
    """
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def job_name(run_name: str, attempt: int) -> str:
    """``<run>-a<N>``, shortened deterministically when the run's name is long."""
    return short_name(run_name, f"-a{attempt}")


def cleanup_job_name(run_name: str, uid: str, purge: bool = True) -> str:
    """``<run>-cleanup-<uid5>`` (deletion: purge) or ``<run>-retire-<uid5>`` (a failed run under
    ``retain: Never``): unique per run object, so a re-created run never meets an old one."""
    return short_name(run_name, f"-{'cleanup' if purge else 'retire'}-{uid.replace('-', '')[:5]}")


def run_labels(run: Run) -> dict[str, str]:
    """Labels that tie a child object to its run."""
    return {LABEL_RUN: short_name(run.name), LABEL_RUN_UID: run.uid}


def owner_reference(run: Run) -> dict[str, Any]:
    """Makes the run own the Job: deleting the run garbage-collects its Jobs and pods."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def checkpoint_uri(run: Run, config: OperatorConfig) -> str | None:
    """The run's checkpoint URI, or the operator's default."""
    return run.spec.checkpoint.uri or config.default_checkpoint_uri


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def runtime_env(run: Run, attempt: int, config: OperatorConfig, *, rerun_from: str | None) -> list[dict[str, Any]]:
    """The pod's environment contract (pipeline_runtime.contracts), then the user's ``spec.env``."""
    spec = run.spec
    env = [
        _env(c.ENV_PIPELINE, spec.pipeline),
        _env(c.ENV_PARAMS, json.dumps(spec.params, separators=(",", ":"), sort_keys=True)),
        _env(c.ENV_RUN_ID, run.run_id),
        _env(c.ENV_RESUME, "true"),
        _env(c.ENV_RESUME_POLICY, spec.checkpoint.resume.value),
        _env(c.ENV_ATTEMPT, str(attempt)),
        _env(c.ENV_RETAIN, spec.checkpoint.retain.value),
        _env(c.ENV_TERM_DEADLINE, str(grace_seconds(run, config))),
        _env(c.ENV_PROGRESS_INTERVAL, f"{spec.checkpoint.progress_interval_seconds:g}"),
        {"name": c.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": c.ENV_POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    uri = checkpoint_uri(run, config)
    if uri:
        env.append(_env(c.ENV_CHECKPOINT_URI, uri))
    if spec.tenant:
        env.append(_env(c.ENV_TENANT, spec.tenant))
    if rerun_from:
        env.append(_env(c.ENV_RERUN_FROM, rerun_from))
    env += [var.model_dump(by_alias=True, exclude_none=True) for var in spec.env]
    return env


def grace_seconds(run: Run, config: OperatorConfig) -> int:
    """Seconds a stopped pod gets to commit its checkpoint."""
    value = run.spec.termination_grace_period_seconds
    return config.termination_grace_seconds if value is None else value


MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
}
"""Lists a podTemplate merges into element by element, by the key Kubernetes' strategic merge uses."""
UNION_LISTS = ("tolerations", "topologySpreadConstraints")
"""Lists without a merge key: the podTemplate's items are added to the operator's."""


def _merge(base: Any, over: Any, key: str = "") -> Any:
    """Deep-merge ``over`` into ``base``, as ``kubectl patch`` (strategic merge) would.

    Dicts key by key; the lists of MERGE_KEYS element by element by their key (the
    operator's order first, new elements after); UNION_LISTS added to; other values
    replaced. The pipeline container stays first (a runtime reading "the first
    container" must find the pipeline); spec.py refuses what the operator owns.
    """
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v, k) for k, v in over.items()}}
    if key in MERGE_KEYS and isinstance(base, list) and isinstance(over, list):
        field = MERGE_KEYS[key]

        def ident(item: Any) -> Any:
            return item.get(field, CONTAINER_NAME if key == "containers" else None) if isinstance(item, dict) else None

        merged = [dict(item) for item in base]
        for item in over:
            at = next((i for i, old in enumerate(merged) if ident(old) == ident(item)), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = _merge(merged[at], item)
        return merged
    if key in UNION_LISTS and isinstance(base, list) and isinstance(over, list):
        return [*copy.deepcopy(base), *(copy.deepcopy(x) for x in over if x not in base)]
    return copy.deepcopy(over)


def drop_spot(pod_spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Remove node selectors, tolerations and node-affinity terms that ask for spot capacity."""
    spec = copy.deepcopy(pod_spec)
    spot = set(keys)
    selector = {k: v for k, v in (spec.get("nodeSelector") or {}).items() if k not in spot}
    if selector:
        spec["nodeSelector"] = selector
    else:
        spec.pop("nodeSelector", None)
    tolerations = [t for t in spec.get("tolerations") or [] if t.get("key") not in spot]
    if tolerations:
        spec["tolerations"] = tolerations
    else:
        spec.pop("tolerations", None)
    node_aff = (spec.get("affinity") or {}).get("nodeAffinity") or {}

    def clean(term: dict[str, Any]) -> dict[str, Any] | None:
        exprs = [e for e in term.get("matchExpressions") or [] if e.get("key") not in spot]
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            return None
        return (
            {**term, "matchExpressions": exprs} if exprs else {k: v for k, v in term.items() if k != "matchExpressions"}
        )

    required = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = [t for t in (clean(t) for t in required.get("nodeSelectorTerms") or []) if t]
        if terms:
            node_aff["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
        else:
            node_aff.pop("requiredDuringSchedulingIgnoredDuringExecution")
    preferred = node_aff.get("preferredDuringSchedulingIgnoredDuringExecution")
    if preferred:
        kept = []
        for pref in preferred:
            term = clean(pref.get("preference") or {})
            if term:
                kept.append({**pref, "preference": term})
        if kept:
            node_aff["preferredDuringSchedulingIgnoredDuringExecution"] = kept
        else:
            node_aff.pop("preferredDuringSchedulingIgnoredDuringExecution")
    if "affinity" in spec and not node_aff:
        spec["affinity"].pop("nodeAffinity", None)
        if not spec["affinity"]:
            spec.pop("affinity")
    return spec


def wants_spot(pod_spec: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """True if the pod asks for spot capacity (so its attempts are recorded as spot)."""
    spot = set(keys)
    return bool(spot & set(pod_spec.get("nodeSelector") or {})) or any(
        t.get("key") in spot for t in pod_spec.get("tolerations") or []
    )


JOB_DEADLINE_SLACK_SECONDS = 60
"""How much later than its pod's deadline (plus grace) an attempt Job's own deadline fires."""


def build_job(
    run: Run,
    attempt: int,
    config: OperatorConfig,
    *,
    rerun_from: str | None = None,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The Job of attempt ``attempt``: one pod, never restarted or replaced by Kubernetes.

    ``active_deadline_seconds`` is what is left of the run's deadline (the caller computes it).
    It goes on the pod: kubelet then stops the pod (SIGTERM, grace, SIGKILL) and marks it
    Failed/DeadlineExceeded, and the pod with its log stays. The Job gets it plus the grace
    period plus :data:`JOB_DEADLINE_SLACK_SECONDS`, as a backstop for a pod that waited long
    before a node took it (a pod's deadline counts from its start on the node); the Job
    controller deletes the pod when that one fires.
    """
    spec = run.spec
    labels = {**run_labels(run), LABEL_ATTEMPT: str(attempt)}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or config.default_image,
        "command": list(config.runtime_command),
        "env": runtime_env(run, attempt, config, rerun_from=rerun_from),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    resources = spec.resources.model_dump(by_alias=True, exclude_none=True) if spec.resources else None
    if resources:
        container["resources"] = copy.deepcopy(resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace_seconds(run, config),
        "containers": [container],
    }
    sa = spec.service_account_name or config.default_service_account
    if sa:
        pod_spec["serviceAccountName"] = sa
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(spec.tolerations)
    if spec.affinity:
        pod_spec["affinity"] = copy.deepcopy(spec.affinity)
    pod_meta: dict[str, Any] = {"labels": dict(labels), "annotations": {ANNOTATION_RUN_NAME: run.name}}
    if spec.pod_template is not None:
        if spec.pod_template.spec:
            pod_spec = _merge(pod_spec, spec.pod_template.spec)
            pod_spec["restartPolicy"] = "Never"  # a restarted container would hide preemptions
        if spec.pod_template.metadata:
            extra = spec.pod_template.metadata
            pod_meta["labels"] = {**(extra.get("labels") or {}), **labels}
            pod_meta["annotations"] = {**(extra.get("annotations") or {}), ANNOTATION_RUN_NAME: run.name}
    job_labels = {**labels, LABEL_ROLE: "attempt"}
    for key, value in pod_meta["labels"].items():
        if key.startswith(KUEUE_LABEL_PREFIX):  # Kueue reads the queue name from the Job itself
            job_labels.setdefault(key, value)
    if not spot_allowed(spec.on_demand_after_preemptions, run.status.preemptions):
        pod_spec = drop_spot(pod_spec, config.spot_label_keys)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podReplacementPolicy": "Failed",
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if active_deadline_seconds is not None:
        own = pod_spec.get("activeDeadlineSeconds")  # a podTemplate's own bound per attempt
        left = max(1, active_deadline_seconds)
        pod_spec["activeDeadlineSeconds"] = min(own, left) if isinstance(own, int) and own > 0 else left
        job_spec["activeDeadlineSeconds"] = (
            pod_spec["activeDeadlineSeconds"] + int(pod_spec.get("terminationGracePeriodSeconds") or 0)
        ) + JOB_DEADLINE_SLACK_SECONDS
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run.name, attempt),
            "namespace": run.namespace,
            "labels": job_labels,
            "annotations": {ANNOTATION_RUN_NAME: run.name},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }


def build_cleanup_job(run: Run, config: OperatorConfig, *, purge: bool) -> dict[str, Any] | None:
    """A short Job that removes the run's checkpoint under the run's own service account:
    ``purge`` (the run is deleted) removes everything; otherwise it retires the checkpoint,
    leaving the tombstone (a failed run under ``retain: Never``).

    The operator never holds storage credentials; the runner's identity already does.
    It is not owned by the run (the run is being deleted); ``ttlSecondsAfterFinished``
    removes it. ``None`` when there is no checkpoint location to clean.
    """
    uri = checkpoint_uri(run, config)
    if not uri:
        return None
    args = [*config.cleanup_command, uri, "--run-id", run.run_id]
    if run.spec.tenant:
        args += ["--tenant", run.spec.tenant]
    if purge:
        args.append("--purge")
    labels = {**run_labels(run), LABEL_ROLE: "cleanup"}
    container: dict[str, Any] = {
        "name": "cleanup",
        "image": run.spec.image or config.default_image,
        "command": args,
        "env": [var.model_dump(by_alias=True, exclude_none=True) for var in run.spec.env],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    sa = run.spec.service_account_name or config.default_service_account
    if sa:
        pod_spec["serviceAccountName"] = sa
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(run.name, run.uid, purge),
            "namespace": run.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_RUN_NAME: run.name},
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": max(60, int(config.cleanup_timeout_seconds)),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }

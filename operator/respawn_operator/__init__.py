"""The Respawn operator: reconciles PipelineRun resources into preemption-aware Job attempts.

Layers (outer to inner, checked by import-linter: pyproject.toml): ``cli`` > ``handlers``
(kopf, thin) > ``reconciler`` (the loop) > ``executor`` (acts) > ``kube`` and the caches
(``runcache``, ``listers``) > ``fanout`` > ``reconcile`` (decides) > pure builders and
classifiers (``job_builder``, ``classify``, ``budgets``, ``reports``) > ``spec`` (pydantic
models). Only ``kube`` talks to the API server, on behalf of ``handlers``, ``reconciler``
and ``executor`` (and ``kubectl_plugin``, the users' ``kubectl respawn``, with their own
kubeconfig).
"""

from pipeline_runtime.contracts import PROGRESS_ANNOTATION

GROUP = "respawn.dev"
VERSION = "v1alpha1"
KIND = "PipelineRun"
PLURAL = "pipelineruns"
SINGULAR = "pipelinerun"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_RUN = "respawn.dev/run"
"""Label on Jobs and pods: the PipelineRun's name (or a hash of it if too long for a label)."""
LABEL_RUN_UID = "respawn.dev/run-uid"
"""Label on Jobs and pods: the PipelineRun's uid, so a re-created run never adopts old children."""
LABEL_ATTEMPT = "respawn.dev/attempt"
"""Label on Jobs and pods: the attempt number (the fencing token)."""
LABEL_ROLE = "respawn.dev/role"
"""Label on Jobs: ``attempt`` or ``cleanup``."""
ANNOTATION_PROGRESS = PROGRESS_ANNOTATION
"""Pod annotation the runtime patches with its live progress (JSON); defined by the runtime's contracts."""
ANNOTATION_STOPPED = "respawn.dev/stopped"
"""Annotation the operator puts on an attempt pod it stops itself (the value says why, e.g.
``Suspended``), together with a lowered ``spec.activeDeadlineSeconds``: the pod then ends
Failed/DeadlineExceeded, and this tells that apart from the run's own deadline."""
ANNOTATION_RUN_NAME = "respawn.dev/run-name"
"""Annotation on Jobs and pods: the full PipelineRun name (labels may hold a shortened form)."""

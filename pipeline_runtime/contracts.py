"""The whole pod-operator contract: exit codes, termination reasons, environment names, the
progress annotation.

The operator imports this module (never the other way round); changing a value
here changes the wire contract between a pod and the operator (README: exit codes; docs/runtime.md).
"""

from __future__ import annotations

import enum
from typing import Final


class ExitCode(enum.IntEnum):
    """Process exit codes of `pipeline-runtime run`, and what the operator does."""

    SUCCEEDED = 0
    """All steps done."""
    STEP_FAILED = 1
    """A step raised: retry, counts a failure."""
    INVALID_INPUT = 64
    """Invalid params or configuration: the run fails at once."""
    INCOMPATIBLE_CHECKPOINT = 65
    """The checkpoint does not match this definition under `resume: Strict`: fails at once."""
    TRANSIENT_INFRA = 75
    """Storage unreachable or similar: retry, counts as an infrastructure loss."""
    SUPERSEDED = 76
    """A newer attempt owns the run (or it already finished): no action for this attempt."""
    INTERRUPTED = 130
    """Stopped by SIGINT (Ctrl-C) after committing a checkpoint: the operator treats it as 143."""
    TERMINATED = 143
    """Stopped by SIGTERM after committing a checkpoint: retry, counts a preemption."""


class Reason:
    """The ``reason`` of the runtime's termination message (docs/runtime.md), one per way a
    run ends; the operator's attempt records and `kubectl describe` show the same words."""

    SUCCEEDED: Final = "Succeeded"
    STEP_FAILED: Final = "StepFailed"
    INVALID_INPUT: Final = "InvalidInput"
    INCOMPATIBLE_CHECKPOINT: Final = "IncompatibleCheckpoint"
    TRANSIENT_INFRA: Final = "TransientInfra"
    SUPERSEDED: Final = "Superseded"
    TERMINATED: Final = "Terminated"


class ResumePolicy(str, enum.Enum):
    """What to do when the stored checkpoint was written by a different definition."""

    STRICT = "Strict"
    """Refuse (exit 65) unless pipeline name, version and step list are identical."""
    COMPATIBLE = "Compatible"
    """Keep the completed steps that still exist, in the same order, as a prefix; else start over."""
    RESTART = "Restart"
    """Ignore any stored checkpoint and start from the first step."""


class RetainPolicy(str, enum.Enum):
    """What stays in checkpoint storage after the run ends."""

    ALWAYS = "Always"
    """Keep every commit and artifact."""
    ON_FAILURE = "OnFailure"
    """Keep everything when the run failed; on success keep only the tombstone."""
    NEVER = "Never"
    """Keep only the tombstone, whatever the outcome."""


# Environment twins of the CLI flags. The operator sets these on the pipeline container.
ENV_PIPELINE = "RESPAWN_PIPELINE"
ENV_PARAMS = "RESPAWN_PARAMS"
ENV_RUN_ID = "RESPAWN_RUN_ID"
ENV_CHECKPOINT_URI = "RESPAWN_CHECKPOINT_URI"
ENV_RESUME = "RESPAWN_RESUME"
ENV_RESUME_POLICY = "RESPAWN_RESUME_POLICY"
ENV_ATTEMPT = "RESPAWN_ATTEMPT"
ENV_RETAIN = "RESPAWN_RETAIN"
ENV_TENANT = "RESPAWN_TENANT"
ENV_RERUN_FROM = "RESPAWN_RERUN_FROM"
ENV_TERMINATION_LOG = "RESPAWN_TERMINATION_LOG"
ENV_TERM_DEADLINE = "RESPAWN_TERM_DEADLINE_SECONDS"
ENV_PROGRESS_INTERVAL = "RESPAWN_PROGRESS_INTERVAL_SECONDS"
ENV_POD_NAME = "RESPAWN_POD_NAME"
ENV_POD_NAMESPACE = "RESPAWN_POD_NAMESPACE"
"""The pod's own name and namespace (downward API), where the runtime patches its progress."""

DEFAULT_PROGRESS_INTERVAL_SECONDS = 5.0
"""How often `save_progress` state is committed (spec.checkpoint.progressIntervalSeconds)."""
MIN_PROGRESS_INTERVAL_SECONDS = 0.0
"""0 commits at every save_progress call (tests, or steps that save rarely)."""
MAX_PROGRESS_INTERVAL_SECONDS = 3600.0

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

PROGRESS_ANNOTATION = "respawn.dev/progress"
"""The pod annotation the runtime publishes its live progress in and the operator reads."""

RUN_ID_MAX = 200
"""Longest run id or tenant (a path segment; with the scratch folder's prefix it stays a legal file name)."""

ENV_SERVICEACCOUNT_DIR = "RESPAWN_SERVICEACCOUNT_DIR"
"""Where a pod's ServiceAccount token and CA are (the runtime's progress reports and the
operator's in-cluster login read them); the kubelet's mount path unless set."""
DEFAULT_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

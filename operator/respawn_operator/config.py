"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

N = TypeVar("N", int, float)

DEFAULT_SPOT_LABEL_KEYS = (
    "cloud.google.com/gke-spot",
    "cloud.google.com/gke-preemptible",
    "cloud.google.com/gke-provisioning",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "kubernetes.azure.com/scalesetpriority",
)


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """How the operator builds attempts and where it listens."""

    default_image: str = "respawn-pipeline:latest"
    """Image for pods of runs without ``spec.image`` (RESPAWN_DEFAULT_IMAGE): the Dockerfile's ``pipeline`` target."""
    default_checkpoint_uri: str | None = None
    """Checkpoint URI for runs without ``spec.checkpoint.uri`` (RESPAWN_DEFAULT_CHECKPOINT_URI)."""
    default_service_account: str | None = None
    """Service account of runner pods when the run names none (RESPAWN_RUNNER_SERVICE_ACCOUNT)."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means all (RESPAWN_NAMESPACES, comma separated)."""
    metrics_port: int = 8080
    """Port of the Prometheus /metrics endpoint; 0 turns it off (RESPAWN_METRICS_PORT)."""
    runtime_command: tuple[str, ...] = ("pipeline-runtime", "run")
    """Command of the pipeline container; everything else goes through env (RESPAWN_RUNTIME_COMMAND)."""
    cleanup_command: tuple[str, ...] = ("pipeline-runtime", "cleanup")
    """Command of the checkpoint-cleanup container (RESPAWN_CLEANUP_COMMAND)."""
    image_pull_policy: str | None = None
    """imagePullPolicy of pipeline containers; unset leaves Kubernetes' default (RESPAWN_IMAGE_PULL_POLICY)."""
    termination_grace_seconds: int = 30
    """Grace period of pipeline pods when the run sets none (RESPAWN_TERMINATION_GRACE_SECONDS)."""
    spot_label_keys: tuple[str, ...] = DEFAULT_SPOT_LABEL_KEYS
    """Node label / taint keys that mean spot capacity (RESPAWN_SPOT_LABEL_KEYS)."""
    resync_seconds: float = 15.0
    """Every live run is reconciled at least this often, e.g. to notice a vanished node (RESPAWN_RESYNC_SECONDS)."""
    cleanup_timeout_seconds: float = 300.0
    """How long deletion waits for the checkpoint-cleanup Job before giving up (RESPAWN_CLEANUP_TIMEOUT_SECONDS)."""
    allowed_checkpoint_prefixes: tuple[str, ...] = ()
    """Checkpoint URIs runs may use, as prefixes, in namespaces without a list of their own; empty:
    any (RESPAWN_ALLOWED_CHECKPOINT_PREFIXES, comma separated)."""
    namespace_checkpoint_prefixes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Per namespace, the prefixes its runs may use; they replace the global list there
    (RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES, a JSON object of lists)."""
    api_qps: float = 50.0
    """Requests a second the reconciler's API client sends, sustained (RESPAWN_API_QPS), as
    client-go's QPS; kopf's own watches and patches are not counted."""
    api_burst: int = 100
    """Requests the client may send at once after a quiet spell (RESPAWN_API_BURST)."""
    kept_attempts: int = 5
    """Attempt Jobs (with their pod and its log) kept per run, the newest ones; older attempts'
    Jobs are deleted when a new attempt starts (RESPAWN_KEPT_ATTEMPTS, at least 1)."""
    peering_lifetime_seconds: int = 60
    """With --peering: how long this replica's keep-alive counts, so how long a standby waits
    before it takes over from a replica that died without a goodbye (RESPAWN_PEERING_LIFETIME_SECONDS)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the settings from ``env`` (default: ``os.environ``); a bad number is a
        ValueError naming the variable and its bounds."""
        env = os.environ if env is None else env
        given: Mapping[str, str] = env

        def words(name: str, default: tuple[str, ...], sep: str | None = ",") -> tuple[str, ...]:
            raw = env.get(name)
            if raw is None or not raw.strip():
                return default
            return tuple(w.strip() for w in raw.split(sep) if w.strip())

        def number(name: str, default: N, kind: Callable[[str], N], low: float, high: float) -> N:
            raw = given.get(name)
            if raw is None or not raw.strip():
                return default
            try:
                value = kind(raw.strip())
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or not low <= value <= high:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{name}={raw!r}: must be {what} from {low:g} to {high:g}")
            return value

        base = cls()
        return cls(
            default_image=env.get("RESPAWN_DEFAULT_IMAGE", base.default_image),
            default_checkpoint_uri=env.get("RESPAWN_DEFAULT_CHECKPOINT_URI") or None,
            default_service_account=env.get("RESPAWN_RUNNER_SERVICE_ACCOUNT") or None,
            namespaces=words("RESPAWN_NAMESPACES", ()),
            metrics_port=number("RESPAWN_METRICS_PORT", base.metrics_port, int, 0, 65535),
            runtime_command=words("RESPAWN_RUNTIME_COMMAND", base.runtime_command, None),
            cleanup_command=words("RESPAWN_CLEANUP_COMMAND", base.cleanup_command, None),
            image_pull_policy=env.get("RESPAWN_IMAGE_PULL_POLICY") or None,
            termination_grace_seconds=number(
                "RESPAWN_TERMINATION_GRACE_SECONDS", base.termination_grace_seconds, int, 1, 86_400
            ),
            spot_label_keys=words("RESPAWN_SPOT_LABEL_KEYS", base.spot_label_keys),
            resync_seconds=number("RESPAWN_RESYNC_SECONDS", base.resync_seconds, float, 0.1, 86_400),
            cleanup_timeout_seconds=number(
                "RESPAWN_CLEANUP_TIMEOUT_SECONDS", base.cleanup_timeout_seconds, float, 1, 86_400
            ),
            peering_lifetime_seconds=number(
                "RESPAWN_PEERING_LIFETIME_SECONDS", base.peering_lifetime_seconds, int, 1, 3600
            ),
            api_qps=number("RESPAWN_API_QPS", base.api_qps, float, 0.1, 100_000),
            api_burst=number("RESPAWN_API_BURST", base.api_burst, int, 1, 100_000),
            kept_attempts=max(1, number("RESPAWN_KEPT_ATTEMPTS", base.kept_attempts, int, 0, 1000)),
            allowed_checkpoint_prefixes=words("RESPAWN_ALLOWED_CHECKPOINT_PREFIXES", ()),
            namespace_checkpoint_prefixes=_prefix_map(env.get("RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES")),
        )

    def checkpoint_uri_refusal(self, namespace: str, uri: str) -> str | None:
        """Why a run in `namespace` may not keep its checkpoint at `uri` (None: it may)."""
        allowed = self.namespace_checkpoint_prefixes.get(namespace) or self.allowed_checkpoint_prefixes
        if not allowed or any(uri == p.rstrip("/") or uri.startswith(p.rstrip("/") + "/") for p in allowed):
            return None
        return (
            f"spec.checkpoint.uri {uri} is not allowed in namespace {namespace}: use a URI under "
            f"{' or '.join(allowed)} (the operator's allowed checkpoint prefixes)"
        )


def _prefix_map(raw: str | None) -> dict[str, tuple[str, ...]]:
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in value.values()
    ):
        raise ValueError("RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES must map namespaces to lists of URI prefixes")
    return {str(ns): tuple(p for p in prefixes if p) for ns, prefixes in value.items()}

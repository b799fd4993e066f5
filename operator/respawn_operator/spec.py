"""Pydantic models of the PipelineRun resource: spec (what users write) and status (what we report).

Field names are the PipelineRun API (README "PipelineRun reference"); Python attributes are snake_case with the
camelCase wire names as aliases. The CRD schema in ``crds/`` is generated from these
models by :mod:`respawn_operator.crdgen`, so a rule written here is the rule
``kubectl apply`` enforces. Rules a structural schema cannot express live in the
``model_validator``s (and :func:`parse_spec` turns their errors into one message); the operator reports them as
phase ``Failed`` with a message saying what to fix.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Annotated, Any, Final

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from pipeline_runtime.contracts import (
    DEFAULT_PROGRESS_INTERVAL_SECONDS,
    MAX_PROGRESS_INTERVAL_SECONDS,
    MIN_PROGRESS_INTERVAL_SECONDS,
    RUN_ID_MAX,
    ResumePolicy,
)
from pipeline_runtime.contracts import RetainPolicy as RetainPolicy  # re-exported for the handlers

PIPELINE_PATTERN = (
    r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"|[a-z0-9]([a-z0-9_.-]*[a-z0-9])?)$"
)
"""A registered pipeline name (``dataprep``) or ``package.module:Class``."""
STEP_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""A step is a Python method name."""
TENANT_PATTERN = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
"""Tenants become a path segment of the checkpoint URI: no slashes, no dots at the ends."""
CHECKPOINT_URI_PATTERN = r"^(gs|file)://.+$"
"""Schemes a pod can use: memory:// lives in one process and would lose every checkpoint."""
RESERVED_ENV_PREFIX = "RESPAWN_"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes DNS-1123 subdomain (service account names); at most 253 characters."""
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""A Kubernetes resource quantity (``500m``, ``2Gi``, ``1e3``), as the API server checks it."""
PARAMS_MAX_BYTES = 100 * 1024
"""Largest ``spec.params`` (compact JSON). Params travel in one environment variable,
``RESPAWN_PARAMS``, and Linux refuses to start a process with a variable above 128 KiB
(``MAX_ARG_STRLEN``); the margin leaves room for the variable's name."""

Quantity = Annotated[
    StrictInt | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
"""A Kubernetes quantity: an integer or a string such as ``500m`` or ``4Gi``."""

_PRESERVE: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False)


class Backoff(_Model):
    """Delay before the attempt that follows a failure (preemptions restart at once)."""

    initial_seconds: int = Field(10, ge=0, description="Delay after the first failure.")
    max_seconds: int = Field(600, ge=0, description="Upper bound of the doubling delay.")

    @pydantic.model_validator(mode="after")
    def _max_not_below_initial(self) -> Backoff:
        if self.max_seconds < self.initial_seconds:
            raise ValueError(
                f"budgets.backoff.maxSeconds ({self.max_seconds}) must be >= initialSeconds ({self.initial_seconds})"
            )
        return self


class Budgets(_Model):
    """How many lost attempts the run may spend before it fails."""

    max_preemptions: int = Field(
        20, ge=0, description="Attempts lost to infrastructure (preemption, eviction, node loss)."
    )
    max_failures: int = Field(3, ge=0, description="Attempts lost to the pipeline's own errors.")
    backoff: Backoff = Field(default_factory=Backoff)  # type: ignore[arg-type]


class Checkpoint(_Model):
    """Where and how the run's checkpoint is kept."""

    uri: str | None = Field(
        None,
        pattern=CHECKPOINT_URI_PATTERN,
        description="gs://bucket/prefix or file:///path; default from the operator's config.",
    )
    retain: RetainPolicy = Field(RetainPolicy.ON_FAILURE, description="What stays in storage after the run ends.")
    resume: ResumePolicy = Field(
        ResumePolicy.COMPATIBLE, description="What to do when the pipeline definition changed."
    )
    progress_interval_seconds: float = Field(
        DEFAULT_PROGRESS_INTERVAL_SECONDS,
        ge=MIN_PROGRESS_INTERVAL_SECONDS,
        le=MAX_PROGRESS_INTERVAL_SECONDS,
        description="How often a step's save_progress state is committed (what a SIGKILL or a lost node "
        "costs at most inside a step).",
    )


class EnvVar(_Model):
    """A Kubernetes EnvVar; ``valueFrom`` is passed through as written."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, json_schema_extra=_PRESERVE)


class ResourceRequirements(_Model):
    """Container ResourceRequirements; ``limits`` and ``requests`` values are quantities."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    limits: dict[str, Quantity] | None = Field(None, description='e.g. {cpu: "2", memory: 4Gi}.')
    requests: dict[str, Quantity] | None = Field(None, description='e.g. {cpu: 500m, memory: 1Gi}.')


PIPELINE_CONTAINER = "pipeline"
"""The name of the container that runs the pipeline (the one the operator reads the exit of)."""
OPERATOR_OWNED_CONTAINER_FIELDS = ("command", "args", "terminationMessagePath", "terminationMessagePolicy")
"""Fields of the pipeline container a podTemplate may not set: they decide what runs and how it reports."""


class PodTemplateOverrides(_Model):
    """Extra pod metadata and spec fields, merged over what the operator builds."""

    metadata: dict[str, Any] | None = Field(
        None, json_schema_extra=_PRESERVE, description="labels and annotations to add."
    )
    spec: dict[str, Any] | None = Field(
        None,
        json_schema_extra=_PRESERVE,
        description="PodSpec fields (priorityClassName, volumes, sidecars, ...), merged the way "
        "kubectl patch does: containers, env, volumes by name, volumeMounts by mountPath; "
        "the pipeline container's command, args, termination message and RESPAWN_* env "
        "belong to the operator.",
    )

    @pydantic.model_validator(mode="after")
    def _operator_owned(self) -> PodTemplateOverrides:
        containers = (self.spec or {}).get("containers")
        if containers is None:
            return self
        if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
            raise ValueError("podTemplate.spec.containers must be a list of container objects")
        for i, ct in enumerate(containers):
            name = ct.get("name", PIPELINE_CONTAINER)
            where = f"podTemplate.spec.containers[{i}]"
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}.name must be a non-empty string")
            env = ct.get("env") or []
            if not isinstance(env, list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) for e in env
            ):
                raise ValueError(f"{where}.env must be a list of EnvVar objects with a name")
            for e in env:
                if e["name"].startswith(RESERVED_ENV_PREFIX):
                    raise ValueError(
                        f"{where}.env {e['name']}: names starting with {RESERVED_ENV_PREFIX} "
                        "are set by the operator (run id, attempt, checkpoint); use the "
                        "matching spec field instead"
                    )
            if name == PIPELINE_CONTAINER:
                owned = [f for f in OPERATOR_OWNED_CONTAINER_FIELDS if f in ct]
                if owned:
                    raise ValueError(
                        f"{where}.{owned[0]}: the pipeline container's {', '.join(owned)} "
                        "belong to the operator; put your code in spec.image and spec.pipeline"
                    )
        return self


PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""A pipeline param is a pydantic field name."""
ITEMS_MAX = 10_000
"""Most items of one fan-out: every item is a PipelineRun object in etcd."""


class ConfigMapKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="The ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Its key: one item per line (blank lines skipped).")


class ItemsFrom(_Model):
    config_map_key_ref: ConfigMapKeyRef


class ForEach(_Model):
    """Fan-out: one child PipelineRun per item, each with `param` set to its item."""

    param: str = Field(
        min_length=1, max_length=128, pattern=PARAM_NAME_PATTERN, description="The param each item sets."
    )
    items: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] | None = Field(
        None,
        max_length=ITEMS_MAX,
        description="The items, inline: strings (a video URI, a date, a shard name).",
    )
    items_from: ItemsFrom | None = Field(None, description="The items from a ConfigMap key, one per line.")

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> ForEach:
        if (self.items is None) == (self.items_from is None):
            raise ValueError("foreach: give exactly one of items and itemsFrom")
        return self


class PipelineRunSpec(_Model):
    """What to run, where to keep its checkpoint, and how much loss to tolerate."""

    pipeline: str = Field(
        min_length=1,
        max_length=253,
        pattern=PIPELINE_PATTERN,
        description='Registered pipeline name, or "package.module:Class".',
    )
    image: str | None = Field(
        None, min_length=1, description="Image with the runtime and the pipeline; default from config."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=_PRESERVE,
        description="Pipeline parameters, validated by the pipeline's pydantic Params.",
    )
    tenant: str | None = Field(None, pattern=TENANT_PATTERN, description="Optional; part of the checkpoint path.")
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)  # type: ignore[arg-type]
    budgets: Budgets = Field(default_factory=Budgets)  # type: ignore[arg-type]
    on_demand_after_preemptions: int | None = Field(
        None, ge=0, description="After this many preemptions, drop spot node selectors and tolerations."
    )
    suspend: bool = Field(False, description="true: stop after a checkpoint, keep state; false: resume.")
    rerun_from: str | None = Field(
        None,
        pattern=STEP_PATTERN,
        description="Discard this step and the later ones and run them again (once per change).",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Wall-clock limit for the whole run, over all attempts."
    )
    termination_grace_period_seconds: int | None = Field(
        None, ge=0, description="Time a stopped pod gets to commit its checkpoint (default 30)."
    )
    env: list[EnvVar] = Field(default_factory=list, description="Added to the pipeline container.")
    service_account_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account of the attempt pods (a DNS-1123 subdomain); default from config.",
    )
    resources: ResourceRequirements | None = Field(
        None, json_schema_extra=_PRESERVE, description="Container ResourceRequirements."
    )
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = Field(None, json_schema_extra={"items": {"type": "object", **_PRESERVE}})
    affinity: dict[str, Any] | None = Field(None, json_schema_extra=_PRESERVE)
    pod_template: PodTemplateOverrides | None = None
    foreach: ForEach | None = Field(
        None, description="Run the pipeline once per item, each as a child PipelineRun (docs/fanout.md)."
    )
    parallelism: int | None = Field(None, ge=1, le=ITEMS_MAX, description="With foreach: items in flight (default 10).")
    max_failed_items: int | None = Field(
        None, ge=0, description="With foreach: items that may fail before the run fails (default 0)."
    )

    @pydantic.model_validator(mode="after")
    def _fanout_fields(self) -> PipelineRunSpec:
        if self.foreach is None and (self.parallelism is not None or self.max_failed_items is not None):
            raise ValueError("parallelism and maxFailedItems need foreach")
        if self.foreach is not None and self.foreach.param in self.params:
            raise ValueError(f"foreach.param {self.foreach.param!r} is also in spec.params: each item sets it")
        return self

    @pydantic.model_validator(mode="after")
    def _params_size(self) -> PipelineRunSpec:
        size = params_size(self.params)
        if size > PARAMS_MAX_BYTES:
            raise ValueError(
                f"spec.params is {_kib(size)} as compact JSON, above the limit of "
                f"{_kib(PARAMS_MAX_BYTES)}: params travel in one environment variable "
                f"(RESPAWN_PARAMS), which Linux caps at 128 KiB; put large inputs in a file "
                "(gs:// or file://) and pass its URI as a param instead"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _env_names(self) -> PipelineRunSpec:
        seen: set[str] = set()
        for var in self.env:
            if var.name.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(
                    f"env {var.name}: names starting with {RESERVED_ENV_PREFIX} are set by the "
                    "operator; use the matching spec field instead"
                )
            if var.name in seen:
                raise ValueError(f"env {var.name} is listed twice")
            seen.add(var.name)
        return self


def params_size(params: dict[str, Any]) -> int:
    """Bytes of ``params`` as the operator passes them (compact JSON, ASCII escapes)."""
    return len(json.dumps(params, separators=(",", ":"), sort_keys=True).encode())


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB ({size} bytes)"


class Phase(str, enum.Enum):
    """Where a run is in its life."""

    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class AttemptOutcome(str, enum.Enum):
    """How one attempt ended (``Stopped``: the operator stopped it for suspend or rerun)."""

    SUCCEEDED = "Succeeded"
    PREEMPTED = "Preempted"
    FAILED = "Failed"
    SUPERSEDED = "Superseded"
    STOPPED = "Stopped"


class ConditionType:
    """The condition types in a PipelineRun's status, in the order they are listed
    (docs/operator.md: Conditions)."""

    SUCCEEDED: Final = "Succeeded"
    READY: Final = "Ready"
    CHECKPOINTED: Final = "Checkpointed"
    SUSPENDED: Final = "Suspended"
    ORDER: Final = (SUCCEEDED, READY, CHECKPOINTED, SUSPENDED)


class Condition(_Model):
    """A Kubernetes-style condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    type: str
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class CheckpointRef(_Model):
    """The last checkpoint the runtime committed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    step: str | None = None
    seq: int | None = None
    at: str | None = None
    uri: str | None = None
    attempt: int | None = None


class AttemptRecord(_Model):
    """One Job attempt of the run."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    attempt: int
    job: str
    pod: str | None = None
    node: str | None = None
    spot: bool | None = None
    start_time: str | None = None
    end_time: str | None = None
    outcome: AttemptOutcome | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    resumed_from: str | None = Field(default=None, description="Last committed step when this attempt started.")
    rerun_from: str | None = None
    stopping: str | None = Field(
        default=None, description="Why the operator is stopping this attempt (Suspended, RerunRequested)."
    )


class RerunRecord(_Model):
    """The last ``spec.rerunFrom`` request the operator acted on."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    step: str
    generation: int
    attempt: int


class FailedItem(_Model):
    index: int
    name: str = Field(description="The child PipelineRun.")
    message: str | None = None


class ItemsStatus(_Model):
    """A fan-out's items by phase (a parent run's status.items)."""

    total: int = 0
    pending: int = 0
    """Not started yet (waiting for parallelism), or started and not running yet."""
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    progress: str | None = Field(default=None, description='"succeeded/total", for the Items column.')
    failed_items: list[FailedItem] = Field(default_factory=list, description="The first failed items.")


class PipelineRunStatus(_Model):
    """What the operator reports; ``kubectl get`` and Argo CD read it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    phase: Phase | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    run_id: str | None = Field(default=None, description="The run id the runtime keys the checkpoint by.")
    attempt: int = Field(default=0, description="Current attempt number; the fencing token.")
    preemptions: int = 0
    failures: int = 0
    current_step: str | None = None
    completed_steps: int | None = None
    total_steps: int | None = None
    progress: str | None = Field(default=None, description='"completedSteps/totalSteps", for the Step column.')
    last_checkpoint: CheckpointRef | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    next_attempt_time: str | None = Field(default=None, description="When the next attempt starts (backoff).")
    rerun: RerunRecord | None = None
    start_time: str | None = None
    completion_time: str | None = None
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec fields the result depends on, as the current attempt runs them."
    )
    result_generation: int | None = Field(
        default=None,
        description="The metadata.generation whose spec the current attempt (and so the result) belongs to.",
    )
    items: ItemsStatus | None = Field(default=None, description="A fan-out's items (spec.foreach).")


RESULT_FIELDS = ("pipeline", "image", "params", "tenant", "checkpoint.uri", "checkpoint.resume")
"""Spec fields a run's result depends on: a change to any starts the next attempt (docs/operator.md).
Not in it: budgets, retain, suspend, scheduling; rerunFrom has its own handling."""


def result_hash(spec: PipelineRunSpec) -> str:
    """A short hash of RESULT_FIELDS as parsed (defaults filled in, so spelling out a default changes nothing).

    Plain JSON, not model_dump: pydantic's serializer refuses params a few hundred levels
    deep, which the spec accepts."""
    data = {
        "pipeline": spec.pipeline,
        "image": spec.image,
        "params": spec.params,
        "tenant": spec.tenant,
        "checkpoint.uri": spec.checkpoint.uri,
        "checkpoint.resume": spec.checkpoint.resume.value,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class SpecError(ValueError):
    """The spec is invalid in a way the schema could not catch; the message says what to fix."""


def parse_spec(raw: dict[str, Any]) -> PipelineRunSpec:
    """Parse a spec dict, turning pydantic's error into one readable :class:`SpecError`."""
    try:
        return PipelineRunSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"spec.{loc}: {msg}" if loc != "spec" else msg)
        raise SpecError("; ".join(parts)) from None
    except RecursionError:  # e.g. params nested thousands deep: the run must fail, not stay Pending
        raise SpecError(
            "spec is nested too deeply (params more than a few hundred levels deep?); "
            "flatten it or pass a file's URI as a param"
        ) from None


def parse_status(raw: dict[str, Any] | None) -> PipelineRunStatus:
    """Parse a stored status leniently: unknown or broken parts are dropped, never fatal."""
    raw = dict(raw or {})
    try:
        return PipelineRunStatus.model_validate(raw)
    except pydantic.ValidationError:
        # A status written by an older operator: keep the counters that still parse.
        keep = {k: raw[k] for k in ("attempt", "preemptions", "failures", "runId") if k in raw}
        try:
            return PipelineRunStatus.model_validate(keep)
        except pydantic.ValidationError:
            return PipelineRunStatus()


@dataclasses.dataclass(frozen=True)
class Run:
    """A PipelineRun as the builders and the reconciler see it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: PipelineRunSpec
    status: PipelineRunStatus

    @property
    def run_id(self) -> str:
        """The id the runtime keys the checkpoint by: stable for this object, new if it is re-created.

        Derived from immutable facts only, never read back from ``status`` (whoever may
        patch ``pipelineruns/status`` could otherwise point a run, and its cleanup, at
        another run's checkpoint)."""
        return default_run_id(self.namespace, self.name, self.uid)


def default_run_id(namespace: str, name: str, uid: str) -> str:
    """``<namespace>-<name>-<first 8 chars of uid>``; past RUN_ID_MAX characters the end becomes a hash."""
    rid = f"{namespace}-{name}-{uid.replace('-', '')[:8]}"
    if len(rid) <= RUN_ID_MAX:
        return rid
    digest = hashlib.sha256(rid.encode()).hexdigest()[:16]
    return f"{rid[: RUN_ID_MAX - 17]}-{digest}"

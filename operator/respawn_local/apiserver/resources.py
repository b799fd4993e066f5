"""Resource types: what the server serves (the built-ins here, CRDs' in crds.py)."""

from __future__ import annotations

import dataclasses

from respawn_local.apiauth import RBAC_GROUP
from respawn_local.apiserver.common import Obj


@dataclasses.dataclass
class ResourceType:
    """One served resource (a built-in or a CRD's)."""

    group: str
    """API group, "" for core."""
    versions: list[str]
    """Served versions; the first is the preferred one."""
    plural: str
    """URL name, e.g. `pods`."""
    singular: str
    """Singular name, e.g. `pod`."""
    kind: str
    """Object kind, e.g. `Pod`."""
    namespaced: bool
    """Whether objects live in namespaces."""
    short_names: list[str] = dataclasses.field(default_factory=list)
    """kubectl short names."""
    categories: list[str] = dataclasses.field(default_factory=list)
    """kubectl categories (e.g. `all`)."""
    status_subresource: bool = False
    """Whether writes to the main resource ignore `.status` (and `/status` changes only it)."""
    schemas: dict[str, Obj] = dataclasses.field(default_factory=dict)
    """openAPIV3Schema per version (CRDs only)."""
    printer_columns: dict[str, list[Obj]] = dataclasses.field(default_factory=dict)
    """additionalPrinterColumns per version (CRDs only)."""
    field_selectors: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    """Fields usable in fieldSelector."""
    extra_subresources: tuple[str, ...] = ()
    """Subresources other than status (e.g. `eviction`, `log`, `binding`)."""
    crd: bool = False
    """Whether the type comes from a CustomResourceDefinition."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """`plural.group` (or just plural for core), as used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


def _builtin_types() -> list[ResourceType]:
    pod_fields = (
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    )
    event_fields = (
        "metadata.name",
        "metadata.namespace",
        "involvedObject.*",
        "reason",
        "type",
        "source",
        "reportingComponent",
    )
    return [
        ResourceType(
            "",
            ["v1"],
            "namespaces",
            "namespace",
            "Namespace",
            False,
            ["ns"],
            status_subresource=True,
            field_selectors=("metadata.name", "status.phase"),
        ),
        ResourceType(
            "",
            ["v1"],
            "pods",
            "pod",
            "Pod",
            True,
            ["po"],
            ["all"],
            status_subresource=True,
            field_selectors=pod_fields,
            extra_subresources=("eviction", "log", "binding"),
        ),
        ResourceType("", ["v1"], "events", "event", "Event", True, ["ev"], field_selectors=event_fields),
        ResourceType(
            "",
            ["v1"],
            "nodes",
            "node",
            "Node",
            False,
            ["no"],
            status_subresource=True,
            field_selectors=("metadata.name", "spec.unschedulable"),
        ),
        ResourceType("", ["v1"], "configmaps", "configmap", "ConfigMap", True, ["cm"]),
        ResourceType(
            "",
            ["v1"],
            "secrets",
            "secret",
            "Secret",
            True,
            field_selectors=("metadata.name", "metadata.namespace", "type"),
        ),
        ResourceType(
            "",
            ["v1"],
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            ["sa"],
            extra_subresources=("token",),
        ),
        ResourceType("", ["v1"], "services", "service", "Service", True, ["svc"], ["all"], status_subresource=True),
        ResourceType(
            "apps",
            ["v1"],
            "deployments",
            "deployment",
            "Deployment",
            True,
            ["deploy"],
            ["all"],
            status_subresource=True,
        ),
        ResourceType(RBAC_GROUP, ["v1"], "roles", "role", "Role", True),
        ResourceType(RBAC_GROUP, ["v1"], "clusterroles", "clusterrole", "ClusterRole", False),
        ResourceType(RBAC_GROUP, ["v1"], "rolebindings", "rolebinding", "RoleBinding", True),
        ResourceType(RBAC_GROUP, ["v1"], "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
        # Stored, not enforced: the chart's policies are tested with a CEL library instead (docs/emulator.md).
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            False,
            status_subresource=True,
        ),
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            False,
        ),
        ResourceType(
            "events.k8s.io",
            ["v1"],
            "events",
            "event",
            "Event",
            True,
            ["ev"],
            field_selectors=("metadata.name", "metadata.namespace", "regarding.*", "reason", "type"),
        ),
        ResourceType(
            "batch",
            ["v1"],
            "jobs",
            "job",
            "Job",
            True,
            [],
            ["all"],
            status_subresource=True,
            field_selectors=("metadata.name", "metadata.namespace", "status.successful"),
        ),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True),
        ResourceType(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            ["crd", "crds"],
            ["api-extensions"],
            status_subresource=True,
        ),
    ]

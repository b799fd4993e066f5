"""Validation and defaulting of objects on write: names, labels, built-in kinds, CRD schemas."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from respawn_local.apiserver.base import ServerBase
from respawn_local.apiserver.common import ApiError, Obj, _field_validation
from respawn_local.apiserver.resources import ResourceType
from respawn_local.apiserver.schema import apply_schema

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class AdmissionMixin(ServerBase):
    """`ApiServer`'s validation, defaulting and immutability checks."""

    def _invalid(self, rtype: ResourceType, name: str, causes: list[Obj]) -> ApiError:
        kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
        text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
        details: Obj = {"name": name, "kind": rtype.kind, "causes": causes}
        if rtype.group:
            details["group"] = rtype.group
        if len(causes) > 1:
            text = f"[{text}]"
        return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details)

    def _validate(self, rtype: ResourceType, obj: Obj, version: str | None, field_validation: str | None = None) -> Obj:
        """Validate name and (for CRDs) the schema; return the pruned, defaulted object.

        Unknown fields are pruned; with `fieldValidation=Strict` (what kubectl sends)
        they are a 400, like the real server.
        """
        name = obj["metadata"].get("name", "")
        causes: list[Obj] = []
        if not name:
            causes.append(
                {
                    "reason": "FieldValueRequired",
                    "message": "Required value: name or generateName is required",
                    "field": "metadata.name",
                }
            )
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                }
            )
        for value in (obj["metadata"].get("labels") or {}).values():
            if (
                not isinstance(value, str)
                or len(value) > 63
                or (value and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value))
            ):
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.labels",
                        "message": f"Invalid value: {json.dumps(value)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
                    }
                )
        if rtype.key == ("", "pods"):
            causes += _pod_spec_problems(obj.get("spec"), "spec")
        elif rtype.key == ("batch", "jobs"):
            template = (obj.get("spec") or {}).get("template") or {}
            causes += _pod_spec_problems(template.get("spec"), "spec.template.spec")
        field_validation = field_validation or _field_validation.get()
        schema = rtype.schemas.get(version or rtype.versions[0])
        if schema is not None and not causes:
            meta, api_version, kind = obj["metadata"], obj.get("apiVersion"), obj.get("kind")
            body = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
            root = {
                **schema,
                "properties": {
                    k: v
                    for k, v in (schema.get("properties") or {}).items()
                    if k not in ("metadata", "apiVersion", "kind")
                },
            }
            root.pop("required", None)
            dropped: list[str] = []
            pruned = apply_schema(root, body, "", causes, dropped=dropped)
            if dropped and field_validation == "Strict":
                fields = ", ".join(f'unknown field "{d}"' for d in dropped)
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{rtype.kind} in version "{version or rtype.versions[0]}" cannot be handled as a {rtype.kind}: strict decoding error: {fields}',
                )
            for key in schema.get("required") or []:
                if key not in ("metadata", "apiVersion", "kind") and key not in pruned:
                    causes.append({"reason": "FieldValueRequired", "message": "Required value", "field": key})
            obj = {"apiVersion": api_version, "kind": kind, "metadata": meta, **pruned}
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions") and not causes:
            causes.extend(self._crd_problems(obj))
        if causes:
            raise self._invalid(rtype, name, causes)
        return obj

    def _apply_defaults(self, rtype: ResourceType, obj: Obj) -> None:
        """Defaults the real server fills in for the built-ins we care about."""
        if rtype.key == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            containers = spec.get("containers")
            for c in containers if isinstance(containers, list) else []:
                if not isinstance(c, dict):
                    continue  # validation refuses it with a message
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("imagePullPolicy", "IfNotPresent")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            obj["status"].setdefault("qosClass", "BestEffort")
        elif rtype.key == ("batch", "jobs"):
            spec = obj.setdefault("spec", {})
            for key, value in (
                ("backoffLimit", 6),
                ("completions", 1),
                ("parallelism", 1),
                ("suspend", False),
                ("completionMode", "NonIndexed"),
                ("manualSelector", False),
            ):
                spec.setdefault(key, value)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            obj.setdefault("status", {})
        elif rtype.key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")

    def _finish_job_create(self, obj: Obj) -> None:
        # The real Job strategy labels the job and its template with the controller uid.
        uid, name = obj["metadata"]["uid"], obj["metadata"].get("name", "")
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec = obj["spec"]
        if not spec.get("manualSelector"):
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
            tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
            tmeta.setdefault("labels", {}).update(labels)
        meta_labels = obj["metadata"].setdefault("labels", {})
        for key in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name", "controller-uid", "job-name"):
            meta_labels.setdefault(key, labels[key])

    def _check_immutable(self, rtype: ResourceType, old: Obj, new: Obj) -> None:
        """The immutability rules of pods and jobs that a controller can trip over."""
        name = old["metadata"]["name"]
        if rtype.key == ("", "pods"):
            # Like ValidatePodUpdate: spec.activeDeadlineSeconds may be set or lowered, never
            # raised or removed (a running pod's deadline only ever comes closer).
            old_deadline = (old.get("spec") or {}).get("activeDeadlineSeconds")
            new_deadline = (new.get("spec") or {}).get("activeDeadlineSeconds")
            problem = None
            if new_deadline is not None and (not isinstance(new_deadline, int) or new_deadline < 0):
                problem = "must be between 0 and 2147483647, inclusive"
            elif new_deadline is not None and old_deadline is not None and old_deadline < new_deadline:
                problem = "must be less than or equal to previous value"
            elif new_deadline is None and old_deadline is not None:
                problem = "must not update from a positive integer to nil value"
            if problem is not None:
                raise self._invalid(
                    rtype,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.activeDeadlineSeconds",
                            "message": f"Invalid value: {json.dumps(new_deadline)}: {problem}",
                        }
                    ],
                )

            def mutable_removed(spec: Obj | None) -> Obj:
                spec = copy.deepcopy(spec or {})
                for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"):
                    spec.pop(key, None)
                for key in ("containers", "initContainers"):
                    for c in spec.get(key) or []:
                        c.pop("image", None)
                return spec

            if mutable_removed(old.get("spec")) != mutable_removed(new.get("spec")):
                raise self._invalid(
                    rtype,
                    name,
                    [
                        {
                            "reason": "FieldValueForbidden",
                            "field": "spec",
                            "message": "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                            "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                        }
                    ],
                )
        elif rtype.key == ("batch", "jobs"):
            old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
            causes = []
            for field in ("selector", "completionMode", "podFailurePolicy"):
                if old_spec.get(field) != new_spec.get(field):
                    causes.append(
                        {
                            "reason": "FieldValueInvalid",
                            "field": f"spec.{field}",
                            "message": f"Invalid value: {json.dumps(new_spec.get(field))}: field is immutable",
                        }
                    )
            old_t, new_t = copy.deepcopy(old_spec.get("template") or {}), copy.deepcopy(new_spec.get("template") or {})
            # Scheduling directives may change while a suspended Job has never started.
            if new_spec.get("suspend") and not (old.get("status") or {}).get("startTime"):
                for t in (old_t, new_t):
                    for key in ("nodeSelector", "tolerations", "affinity", "schedulingGates"):
                        (t.get("spec") or {}).pop(key, None)
                    for key in ("labels", "annotations"):
                        (t.get("metadata") or {}).pop(key, None)
            if old_t != new_t:
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.template",
                        "message": "Invalid value: {...}: field is immutable",
                    }
                )
            if causes:
                raise self._invalid(rtype, name, causes)


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _pod_spec_problems(spec: Any, field: str) -> list[Obj]:
    """What the real PodSpec validation refuses among the fields our builders write."""

    def bad(where: str, message: str, reason: str = "FieldValueInvalid") -> Obj:
        return {"reason": reason, "field": where, "message": message}

    if not isinstance(spec, dict):
        return [bad(field, "Required value", "FieldValueRequired")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [bad(f"{field}.containers", "Required value: a non-empty list of containers", "FieldValueRequired")]
    problems: list[Obj] = []
    names: set[str] = set()
    for i, ct in enumerate(containers):
        where = f"{field}.containers[{i}]"
        if not isinstance(ct, dict):
            problems.append(bad(where, "Invalid value: a container must be an object"))
            continue
        name = ct.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            problems.append(bad(f"{where}.name", f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 label"))
        elif name in names:
            problems.append(bad(f"{where}.name", f"Duplicate value: {json.dumps(name)}", "FieldValueDuplicate"))
        names.add(str(name))
        if not isinstance(ct.get("image"), str) or not ct["image"]:
            problems.append(bad(f"{where}.image", "Required value", "FieldValueRequired"))
        for key in ("command", "args"):
            value = ct.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                problems.append(bad(f"{where}.{key}", "Invalid value: a list of strings"))
        env = ct.get("env")
        if env is not None and not isinstance(env, list):
            problems.append(bad(f"{where}.env", "Invalid value: a list of EnvVar"))
            continue
        for j, var in enumerate(env or []):
            vname = var.get("name") if isinstance(var, dict) else None
            if not isinstance(vname, str) or not _ENV_NAME.fullmatch(vname):
                problems.append(
                    bad(
                        f"{where}.env[{j}].name",
                        f"Invalid value: {json.dumps(vname)}: a valid environment "
                        "variable name must consist of alphabetic characters, digits, '_', '-', or '.', "
                        "and must not start with a digit",
                    )
                )
    if spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
        problems.append(
            bad(
                f"{field}.restartPolicy",
                f"Unsupported value: {json.dumps(spec.get('restartPolicy'))}",
                "FieldValueNotSupported",
            )
        )
    return problems

"""Which Kubernetes API calls the operator makes, found by reading its source.

The RBAC test grants nothing by hand: it asks this module what ``respawn_operator``
calls (its own REST client, its kopf handlers, what kopf itself needs) and checks the
chart's roles allow each of them. A call this module cannot read fails the test, so a
new kind of call cannot slip past RBAC unnoticed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import respawn_operator

PACKAGE = Path(respawn_operator.__file__).resolve().parent

CLIENT_VERBS = {"get": "get", "list": "list", "create": "create", "delete": "delete"}
"""KubeClient methods (respawn_operator/kube.py) and the RBAC verb each needs."""
HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
PEERING_RESOURCES = {"clusterkopfpeerings": True, "kopfpeerings": False}
"""kopf's peering objects (plural: read when cluster-wide?): the operator's peering gate reads
the one of its scope, and only with --peering."""
KOPF_CHANGE_HANDLERS = {"create", "update", "delete", "resume", "field", "timer", "daemon"}
"""kopf handlers that keep state on the object: a finalizer and progress annotations (patch)."""


@dataclass(frozen=True, order=True)
class Need:
    """One permission: ``verb`` on ``resource`` (``plural`` or ``plural/sub``) of ``group``."""

    group: str
    resource: str
    verb: str
    namespaced: bool
    why: str

    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def _constants() -> dict[str, object]:
    return {k: getattr(respawn_operator, k) for k in dir(respawn_operator) if k.isupper()}


def _resources() -> dict[str, tuple[str, str, bool]]:
    """Module-level ``NAME = Resource(group, version, plural, namespaced=...)`` in kube.py."""
    tree = ast.parse((PACKAGE / "kube.py").read_text())
    found = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "Resource"
            and isinstance(node.targets[0], ast.Name)
        ):
            args = [ast.literal_eval(a) for a in node.value.args]
            kw = {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
            namespaced = kw.get("namespaced", args[3] if len(args) > 3 else True)
            found[node.targets[0].id] = (args[0], args[2], bool(namespaced))
    return found


def _value(node: ast.AST, consts: dict[str, object]) -> object:
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    return ast.literal_eval(node)


def operator_needs(*, clusterwide: bool | None = None, peering: bool | None = None) -> list[Need]:
    """Every permission the operator's code asks for, with where it was found.

    Given the install's scope and peering, calls on kopf's peering objects count only
    where the operator makes them: with peering, on the plural of its scope.
    """
    needs = _all_operator_needs()
    if clusterwide is None or peering is None:
        return needs
    return [
        n
        for n in needs
        if n.group != "kopf.dev"
        or n.resource not in PEERING_RESOURCES
        or (peering and PEERING_RESOURCES[n.resource] == clusterwide)
    ]


def _all_operator_needs() -> list[Need]:
    resources = _resources()
    consts = _constants()
    needs: list[Need] = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "kube.py":  # defines the verbs generically; the callers say what on
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                needs.extend(_client_call(node, resources, where))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in node.decorator_list:
                    needs.extend(_kopf_handler(deco, consts, where))
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                if "blockOwnerDeletion" in keys:
                    idx = keys.index("blockOwnerDeletion")
                    value = node.values[idx]
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        needs.append(
                            Need(
                                str(consts["GROUP"]),
                                f"{consts['PLURAL']}/finalizers",
                                "update",
                                True,
                                f"{where}: ownerReference with blockOwnerDeletion",
                            )
                        )
    return needs


def _client_call(node: ast.Call, resources: dict[str, tuple[str, str, bool]], where: str) -> list[Need]:
    attr = node.func.attr  # type: ignore[attr-defined]
    args = node.args
    if attr in CLIENT_VERBS and args and isinstance(args[0], ast.Name) and args[0].id in resources:
        group, plural, namespaced = resources[args[0].id]
        return [Need(group, plural, CLIENT_VERBS[attr], namespaced, f"{where}: client.{attr}({args[0].id})")]
    if attr != "request" or not args or not (isinstance(args[0], ast.Constant) and args[0].value in HTTP_VERBS):
        return []
    verb = HTTP_VERBS[str(args[0].value)]
    target = args[1] if len(args) > 1 else None
    # client.request("PATCH", PIPELINERUNS.path(ns, name, "status"), ...)
    if (
        isinstance(target, ast.Call)
        and isinstance(target.func, ast.Attribute)
        and target.func.attr == "path"
        and isinstance(target.func.value, ast.Name)
        and target.func.value.id in resources
    ):
        group, plural, namespaced = resources[target.func.value.id]
        sub = target.args[2] if len(target.args) > 2 else None
        suffix = f"/{ast.literal_eval(sub)}" if sub is not None else ""
        return [
            Need(group, plural + suffix, verb, namespaced, f"{where}: request({args[0].value}, {target.func.value.id})")
        ]
    # client.request("POST", f"/api/v1/namespaces/{ns}/events", ...)
    if isinstance(target, ast.JoinedStr):
        text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in target.values)
        parts = text.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[2] == "namespaces":
            return [Need("", parts[4], verb, True, f"{where}: request({args[0].value}, {text})")]
    raise AssertionError(f"{where}: an API call tests/ship/api_calls.py cannot read; teach it this form")


def _kopf_handler(deco: ast.expr, consts: dict[str, object], where: str) -> list[Need]:
    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
        return []
    func = deco.func
    if not (
        isinstance(func.value, ast.Attribute)
        and func.value.attr == "on"
        and isinstance(func.value.value, ast.Name)
        and func.value.value.id == "kopf"
    ):
        return []
    if func.attr in ("startup", "cleanup", "login", "probe"):
        return []
    if len(deco.args) != 3:
        raise AssertionError(
            f"{where}: @kopf.on.{func.attr} without (group, version, plural); teach tests/ship/api_calls.py"
        )
    group, _version, plural = (_value(a, consts) for a in deco.args)
    namespaced = not (group == "" and plural in ("nodes", "namespaces"))
    what = f"{where}: @kopf.on.{func.attr}({group!r}, {plural!r})"
    needs = [Need(str(group), str(plural), verb, namespaced, what) for verb in ("list", "watch")]
    if func.attr in KOPF_CHANGE_HANDLERS:
        needs.append(Need(str(group), str(plural), "patch", namespaced, what + ": finalizer and progress annotations"))
    return needs


def kopf_framework_needs(*, clusterwide: bool, peering: bool) -> list[Need]:
    """What kopf itself does, whatever the handlers are (see kopf/_core/reactor/observation.py)."""
    needs = [
        Need("apiextensions.k8s.io", "customresourcedefinitions", verb, False, "kopf resource scanning")
        for verb in ("list", "watch")
    ]
    needs.append(Need("", "events", "create", True, "kopf posts k8s events for handler errors"))
    if not clusterwide:
        needs += [Need("", "namespaces", verb, False, "kopf namespace observer") for verb in ("list", "watch")]
    if peering:
        plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
        needs += [
            Need("kopf.dev", plural, verb, not clusterwide, "kopf peering") for verb in ("list", "watch", "patch")
        ]
    return needs

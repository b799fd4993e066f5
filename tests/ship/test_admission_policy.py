"""The chart's ValidatingAdmissionPolicy for runner pods, evaluated with a CEL library.

The API emulator stores admission policies but does not run them, so their CEL is
tested here, on the rendered chart, with cel-python: what a Kubernetes 1.30+ API server
would evaluate for a runner pod's PATCH of a pod. Cases are chosen (the attacks the
isolation issue found) and generated (Hypothesis draws pods and the changes to them).
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel  # where it is defined: celpy re-exports it without __all__
from hypothesis import given
from hypothesis import strategies as st

from tests.ship.chart_render import render

PROGRESS = "respawn.dev/progress"
VALUES = {"runner": {"namespaces": ["team-a", {"name": "team-b"}]}}
RUNNER = "system:serviceaccount:team-a:respawn-runner"


def policy_and_binding(values: dict[str, Any] = VALUES) -> tuple[dict[str, Any], dict[str, Any]]:
    manifests = render(values)
    policies = [m.obj for m in manifests if m.kind == "ValidatingAdmissionPolicy"]
    bindings = [m.obj for m in manifests if m.kind == "ValidatingAdmissionPolicyBinding"]
    assert len(policies) == len(bindings) == 1
    return policies[0], bindings[0]


class Policy:
    """The rendered policy's CEL, compiled once; `admits` answers as the API server would."""

    def __init__(self, policy: dict[str, Any]) -> None:
        env = celpy.Environment()
        spec = policy["spec"]
        self.conditions = [env.program(env.compile(c["expression"])) for c in spec["matchConditions"]]
        self.variables = [(v["name"], env.program(env.compile(v["expression"]))) for v in spec["variables"]]
        self.validations = [(env.program(env.compile(v["expression"])), v["message"]) for v in spec["validations"]]

    def admits(self, user: dict[str, Any], namespace: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """None when the request is admitted, else the message of the first failed validation."""
        request = {"userInfo": user, "namespace": namespace, "operation": "UPDATE"}
        activation: dict[str, Any] = {
            "request": json_to_cel(request),
            "object": json_to_cel(new),
            "oldObject": json_to_cel(old),
        }
        if not all(bool(c.evaluate(activation)) for c in self.conditions):
            return None  # not matched: the policy does not apply
        # The chart's variables read only request/object/oldObject, so one pass fills them in.
        activation["variables"] = _cel_map({name: program.evaluate(activation) for name, program in self.variables})
        for program, message in self.validations:
            result = program.evaluate(activation)
            if isinstance(result, Exception) or not bool(result):
                return str(message)
        return None


def _cel_map(values: dict[str, Any]) -> Any:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(policy_and_binding()[0])


def pod(
    name: str = "run-a1-x7k2p",
    uid: str = "uid-1",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    image: str = "img:1",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "uid": uid,
        "labels": labels if labels is not None else {"respawn.dev/run": "run"},
    }
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"containers": [{"name": "pipeline", "image": image}]}}


def bound(pod_name: str = "run-a1-x7k2p", pod_uid: str = "uid-1", username: str = RUNNER) -> dict[str, Any]:
    return {
        "username": username,
        "groups": ["system:serviceaccounts"],
        "extra": {
            "authentication.kubernetes.io/pod-name": [pod_name],
            "authentication.kubernetes.io/pod-uid": [pod_uid],
        },
    }


def test_binding_covers_exactly_the_runner_namespaces() -> None:
    policy, binding = policy_and_binding()
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    expr = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_it_can_be_turned_off_for_clusters_before_1_30() -> None:
    manifests = render({**VALUES, "runner": {**VALUES["runner"], "admissionPolicy": {"enabled": False}}})
    assert not [m for m in manifests if m.kind.startswith("ValidatingAdmissionPolicy")]


def test_a_runner_may_update_its_own_pods_progress(policy: Policy) -> None:
    old = pod(annotations={"respawn.dev/run-name": "run"})
    new = pod(annotations={"respawn.dev/run-name": "run", PROGRESS: '{"completedSteps":2}'})
    assert policy.admits(bound(), "team-a", old, new) is None
    assert policy.admits(bound(), "team-a", pod(), pod(annotations={PROGRESS: "{}"})) is None  # first report


@pytest.mark.parametrize(
    ("user", "new", "says"),
    [
        (bound(pod_name="other-run-a1-zzzzz", pod_uid="uid-2"), pod(annotations={PROGRESS: "{}"}), "only its own pod"),
        (bound(pod_uid="uid-of-an-earlier-pod"), pod(annotations={PROGRESS: "{}"}), "only its own pod"),
        ({"username": RUNNER, "groups": []}, pod(annotations={PROGRESS: "{}"}), "only its own pod"),  # unbound token
        (bound(), pod(labels={"respawn.dev/run": "run", "respawn.dev/attempt": "9"}), "only the respawn.dev/progress"),
        (bound(), pod(labels={}), "only the respawn.dev/progress"),
        (bound(), pod(image="evil:1"), "only the respawn.dev/progress"),
        (bound(), pod(annotations={"respawn.dev/run-name": "victim"}), "only the respawn.dev/progress"),
    ],
)
def test_a_runner_may_not_touch_other_pods_or_other_fields(
    policy: Policy, user: dict[str, Any], new: dict[str, Any], says: str
) -> None:
    message = policy.admits(user, "team-a", pod(), new)
    assert message is not None and says in message


def test_requests_of_others_are_not_matched(policy: Policy) -> None:
    operator = {"username": "system:serviceaccount:respawn-system:respawn", "groups": []}
    assert policy.admits(operator, "team-a", pod(), pod(labels={})) is None
    # team-b's runner patching in team-a is another user: RBAC (no RoleBinding there) refuses it.
    other = bound(username="system:serviceaccount:team-b:respawn-runner")
    assert policy.admits(other, "team-a", pod(), pod(labels={})) is None


KEYS = st.sampled_from([PROGRESS, "respawn.dev/run-name", "respawn.dev/sim-log", "example.com/x"])
TEXT = st.text(alphabet="ab{}:1", max_size=4)


@pytest.mark.slow
@given(
    old_annotations=st.one_of(st.none(), st.dictionaries(KEYS, TEXT, max_size=3)),
    new_annotations=st.one_of(st.none(), st.dictionaries(KEYS, TEXT, max_size=3)),
    relabel=st.booleans(),
    other_pod=st.booleans(),
)
def test_generated_changes_are_admitted_iff_only_the_progress_annotation_of_its_own_pod_changed(
    policy: Policy,
    old_annotations: dict[str, str] | None,
    new_annotations: dict[str, str] | None,
    relabel: bool,
    other_pod: bool,
) -> None:
    old = pod(annotations=old_annotations)
    new = copy.deepcopy(old)
    if new_annotations is None:
        new["metadata"].pop("annotations", None)
    else:
        new["metadata"]["annotations"] = new_annotations
    if relabel:
        new["metadata"]["labels"] = {"respawn.dev/run": "other"}
    user = bound(pod_name="someone-else", pod_uid="uid-9") if other_pod else bound()

    def rest(annotations: dict[str, str] | None) -> dict[str, str]:
        return {k: v for k, v in (annotations or {}).items() if k != PROGRESS}

    allowed = not other_pod and not relabel and rest(old_annotations) == rest(new_annotations)
    assert (policy.admits(user, "team-a", old, new) is None) is allowed

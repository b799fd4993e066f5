"""Fan-out (spec.foreach): one child PipelineRun per item, through the real operator.

The pure part (decide_parent) is tested as a function; the rest runs the kopf operator
against the API emulator with the pod simulator running real `pipeline-runtime` pods.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from respawn_local.testkit import free_port, wait_for
from respawn_operator.fanout import LABEL_PARENT_UID, ParentDecision, child_name, child_spec, decide_parent
from respawn_operator.spec import Phase, parse_spec

from tests.operator.harness import HERE, NS, Cluster, items, running_cluster, submit_parent

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
ENV = [{"name": "PYTHONPATH", "value": str(HERE)}]


def parent(items: list[str], **spec: Any) -> dict[str, Any]:
    labels = {"team": "vision", "app.kubernetes.io/instance": "datasets", "argocd.argoproj.io/instance": "datasets"}
    return {
        "metadata": {"name": "clips", "namespace": "ns", "uid": "u-1", "generation": 1, "labels": labels},
        "spec": {
            "pipeline": "dataprep",
            "params": {"mode": "grid"},
            "foreach": {"param": "video_uri", "items": items},
            **spec,
        },
    }


def child(body: dict[str, Any], index: int, phase: str | None, **status: Any) -> dict[str, Any]:
    item = body["spec"]["foreach"]["items"][index]
    return {
        "metadata": {"name": child_name("clips", item), "generation": 1},
        "spec": child_spec(body["spec"], "video_uri", item),
        "status": {"phase": phase, "observedGeneration": 1, **status} if phase else {},
    }


def decide(body: dict[str, Any], children: list[dict[str, Any]]) -> ParentDecision:
    spec = parse_spec(body["spec"])
    assert spec.foreach is not None
    return decide_parent(body, spec, spec.foreach.items, None, children, NOW)


def test_a_parent_starts_at_most_parallelism_items_in_order() -> None:
    body = parent([f"gs://b/v{i}.mp4" for i in range(5)], parallelism=2)
    d = decide(body, [])
    assert [c["spec"]["params"] for c in d.create] == [
        {"mode": "grid", "video_uri": "gs://b/v0.mp4"},
        {"mode": "grid", "video_uri": "gs://b/v1.mp4"},
    ]
    made = d.create[0]
    assert made["metadata"]["labels"]["team"] == "vision"  # the parent's own labels travel
    assert "app.kubernetes.io/instance" not in made["metadata"]["labels"]  # Argo CD's tracking label does not
    assert not [k for k in made["metadata"]["labels"] if k.startswith("argocd.argoproj.io/")]
    assert "foreach" not in made["spec"] and made["metadata"]["labels"][LABEL_PARENT_UID] == "u-1"
    assert (
        made["metadata"]["ownerReferences"][0]["uid"] == "u-1" and made["metadata"]["ownerReferences"][0]["controller"]
    )
    assert d.status.phase is Phase.PENDING and d.status.items is not None and d.status.items.progress == "0/5"
    # One done, one running: one more starts, the next in the list.
    d = decide(body, [child(body, 0, "Succeeded", preemptions=2), child(body, 1, "Running", preemptions=1)])
    assert [c["spec"]["params"]["video_uri"] for c in d.create] == ["gs://b/v2.mp4"]
    assert d.status.items is not None
    assert d.status.items.running == 1 and d.status.items.succeeded == 1 and d.status.preemptions == 3
    assert d.status.phase is Phase.RUNNING


def test_more_failed_items_than_allowed_fail_the_parent_and_start_nothing() -> None:
    body = parent(["a", "b", "c"], parallelism=1, maxFailedItems=1)
    d = decide(body, [child(body, 0, "Failed", message="video_uri: not found")])
    assert d.status.phase is Phase.RUNNING and len(d.create) == 1  # one failure is allowed
    d = decide(body, [child(body, 0, "Failed", message="x"), child(body, 1, "Failed", message="y")])
    assert d.status.phase is Phase.FAILED and not d.create
    assert "2 of 3 items failed" in (d.status.message or "") and "item 0" in (d.status.message or "")
    assert d.status.items is not None and [f.index for f in d.status.items.failed_items] == [0, 1]


def test_a_child_not_yet_reconciled_at_its_newest_spec_does_not_count_as_done() -> None:
    body = parent(["a"])
    stale = child(body, 0, "Succeeded")
    stale["metadata"]["generation"] = 2  # its spec was just changed; its operator has not looked yet
    d = decide(body, [stale])
    assert d.status.phase is not Phase.SUCCEEDED
    assert d.status.items is not None and d.status.items.succeeded == 0


def test_all_items_succeeded_is_success() -> None:
    body = parent(["a", "b"])
    d = decide(body, [child(body, 0, "Succeeded"), child(body, 1, "Succeeded")])
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.items is not None and d.status.items.progress == "2/2"
    assert d.requeue_after is None and ("Normal", "Succeeded", "all 2 items succeeded") in d.events


def test_a_spec_change_reaches_every_child_and_removed_items_go() -> None:
    body = parent(["a", "b"])
    old = [child(body, 0, "Succeeded"), child(body, 1, "Running")]
    edited = parent(["b", "c"], suspend=True)
    d = decide(edited, old)
    assert d.delete == [child_name("clips", "a")]
    assert [(n, s["suspend"]) for n, s in d.update] == [(child_name("clips", "b"), True)]
    assert not d.create and d.status.phase is Phase.SUSPENDED  # suspended: nothing new starts


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        (["a", "b", "a"], "foreach item 2 repeats item 0"),
        (["x" * 4000] * 1 + ["y" * 4000], None),
    ],
)
def test_items_are_checked_before_any_child_starts(items: list[str], problem: str | None) -> None:
    d = decide(parent(items), [])
    if problem is None:
        assert d.status.phase is Phase.PENDING and len(d.create) == 2
    else:
        assert d.status.phase is Phase.FAILED and problem in (d.status.message or "") and not d.create


def test_item_key_in_params_gives_each_item_its_own_output() -> None:
    from respawn_operator.fanout import item_key

    body = parent(["gs://b/v1.mp4", "gs://b/v2.mp4"])
    body["spec"]["params"] = {"output_uri": "gs://b/out/$(item.key)", "tags": ["clip-$(item.key)"]}
    outs = [c["spec"]["params"] for c in decide(body, []).create]
    assert outs == [
        {"output_uri": f"gs://b/out/{item_key(v)}", "tags": [f"clip-{item_key(v)}"], "video_uri": v}
        for v in ("gs://b/v1.mp4", "gs://b/v2.mp4")
    ]


def test_child_names_fit_a_job_name_and_follow_the_item_not_its_place() -> None:
    long = child_name("p" * 240, "gs://b/v1.mp4")
    assert len(long) <= 63 and long == child_name("p" * 240, "gs://b/v1.mp4")
    assert child_name("clips", "a") != child_name("clips", "b")


# -- through the operator ------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("fanout"), RESPAWN_METRICS_PORT=str(free_port())) as c:
        yield c


def children_of(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    uid = cluster.run(name)["metadata"]["uid"]
    return cluster.api.list("pipelineruns", NS, label_selector=f"{LABEL_PARENT_UID}={uid}")


@pytest.mark.slow
def test_a_parent_runs_every_item_as_a_child_and_succeeds(cluster: Cluster) -> None:
    outs = [cluster.tmp / f"fan-{i}.out" for i in range(3)]
    submit_parent(cluster, "fan", items(outs), parallelism=2)
    st = cluster.wait_phase("fan", "Succeeded", timeout=120)
    assert st["items"]["total"] == 3 and st["items"]["succeeded"] == 3 and st["items"]["progress"] == "3/3"
    for out in outs:
        assert out.read_text() == "a,b,c,d,e 11111\n"
    kids = children_of(cluster, "fan")
    assert sorted(k["spec"]["params"]["out"] for k in kids) == sorted(str(p) for p in outs)
    assert all(k["status"]["phase"] == "Succeeded" and "foreach" not in k["spec"] for k in kids)
    assert {"ItemsStarted", "Succeeded"} <= set(cluster.events("fan"))
    assert not cluster.jobs("fan"), "a parent runs no Job of its own"


@pytest.mark.slow
def test_a_preempted_item_resumes_and_the_parent_counts_it(cluster: Cluster) -> None:
    outs = [cluster.tmp / f"spot-{i}.out" for i in range(2)]
    submit_parent(cluster, "spot", items(outs), step_s=0.4)
    first = child_name("spot", str(outs[0]))
    wait_for(lambda: cluster.api.get_or_none("pipelineruns", first, NS), 60, "the parent to create item 0")
    cluster.wait_status(first, lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit of item 0", timeout=90)
    cluster.sim.preempt(cluster.running_pod(first, 1), NS, reason="TerminationByKubelet", grace=10)
    st = cluster.wait_phase("spot", "Succeeded", timeout=120)
    assert st["preemptions"] == 1
    assert outs[0].read_text() == "a,b,c,d,e 11111\n"
    assert cluster.status(first)["attempts"][1]["resumedFrom"]


@pytest.mark.slow
def test_editing_items_keeps_unchanged_children_and_deleting_the_parent_removes_all(cluster: Cluster) -> None:
    outs = [cluster.tmp / f"edit-{i}.out" for i in range(3)]
    submit_parent(cluster, "edit", items(outs[:2]))
    cluster.wait_phase("edit", "Succeeded", timeout=120)
    kept = cluster.run(child_name("edit", str(outs[1])))["metadata"]["uid"]
    cluster.patch_spec("edit", {"foreach": {"param": "out", "items": [str(outs[1]), str(outs[2])]}})
    wait_for(
        lambda: cluster.api.get_or_none("pipelineruns", child_name("edit", str(outs[0])), NS) is None,
        60,
        "the removed item's child to go",
    )
    st = cluster.wait_status(
        "edit",
        lambda s: s.get("phase") == "Succeeded" and s["items"]["total"] == 2,
        "the edited parent to succeed",
        timeout=120,
    )
    assert st["items"]["succeeded"] == 2
    assert cluster.run(child_name("edit", str(outs[1])))["metadata"]["uid"] == kept  # its result kept
    assert outs[2].read_text() == "a,b,c,d,e 11111\n"
    cluster.api.delete("pipelineruns", "edit", NS)
    wait_for(
        lambda: not [r for r in cluster.api.list("pipelineruns", NS) if r["metadata"]["name"].startswith("edit")],
        60,
        "the parent and its children to go",
    )


def test_items_from_a_config_map_and_a_missing_one_is_reported(cluster: Cluster) -> None:
    outs = [cluster.tmp / f"cm-{i}.out" for i in range(2)]
    cluster.api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "clips", "namespace": NS},
            "data": {"items.txt": "\n".join(str(p) for p in outs) + "\n\n"},
        },
        namespace=NS,
    )
    for name, ref in (("from-cm", {"name": "clips", "key": "items.txt"}), ("no-cm", {"name": "nope", "key": "k"})):
        submit_parent(cluster, name, {"itemsFrom": {"configMapKeyRef": ref}})
    st = cluster.wait_phase("from-cm", "Succeeded", timeout=120)
    assert st["items"]["total"] == 2 and all(p.read_text() == "a,b,c,d,e 11111\n" for p in outs)
    st = cluster.wait_phase("no-cm", "Failed", timeout=60)
    assert "ConfigMap nope not found" in st["message"]


def test_the_fanout_example_runs_as_written_with_local_videos(cluster: Cluster) -> None:
    """examples/fanout-run.yaml with its video URIs and prefixes swapped for local ones: every
    item writes its own dataset under the parent's prefix."""
    import yaml
    from respawn_operator.fanout import item_key

    from tests.dataprep.synth import make_video
    from tests.operator.harness import ROOT

    body = yaml.safe_load((ROOT / "examples" / "fanout-run.yaml").read_text())
    work = cluster.tmp / "fanout-example"
    work.mkdir()
    videos = [make_video(work / f"v{i}.mp4", frames=20 + 10 * i, width=160, height=120) for i in range(2)]
    spec = body["spec"]
    assert spec["params"]["output_uri"].endswith("/$(item.key)")
    spec["params"]["output_uri"] = f"file://{work / 'out'}/$(item.key)"
    spec["params"]["crop_size"] = 32
    spec["foreach"]["items"] = [f"file://{v}" for v in videos]
    spec["checkpoint"]["uri"] = f"file://{work / 'ckpt'}"
    body["metadata"]["namespace"] = NS
    cluster.api.create(body, namespace=NS)
    st = cluster.wait_phase(body["metadata"]["name"], "Succeeded", timeout=180)
    assert st["items"]["succeeded"] == 2
    for item in spec["foreach"]["items"]:
        assert (work / "out" / item_key(item) / "manifest.jsonl").exists()


@pytest.mark.slow
def test_an_operator_killed_mid_fan_out_makes_no_duplicate_children_or_jobs(cluster: Cluster) -> None:
    outs = [cluster.tmp / f"restart-{i}.out" for i in range(6)]
    submit_parent(cluster, "restart", items(outs), parallelism=3, step_s=0.2)
    wait_for(lambda: len(children_of(cluster, "restart")) >= 2, 60, "the first children")
    cluster.op.kill()  # SIGKILL: no shutdown, whatever was in flight is lost
    cluster.op.start()
    st = cluster.wait_phase("restart", "Succeeded", timeout=180)
    assert st["items"]["succeeded"] == 6
    kids = children_of(cluster, "restart")
    assert sorted(k["metadata"]["name"] for k in kids) == sorted(child_name("restart", str(p)) for p in outs)
    for kid in kids:  # one attempt each: the restart neither lost a Job nor made a second one
        assert cluster.jobs(kid["metadata"]["name"]) == [f"{kid['metadata']['name']}-a1"], kid["status"]
    assert all(p.read_text() == "a,b,c,d,e 11111\n" for p in outs)


def test_a_param_the_pipeline_does_not_have_fails_the_items_and_names_the_first(cluster: Cluster) -> None:
    cluster.api.create(
        {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "typo", "namespace": NS},
            "spec": {
                "pipeline": "op_pipelines:Steps",
                "env": ENV,
                "foreach": {"param": "ouptut", "items": ["x", "y"]},
                "maxFailedItems": 0,
            },
        },
        namespace=NS,
    )
    st = cluster.wait_phase("typo", "Failed", timeout=120)
    assert st["message"].startswith("1 of 2 items failed") or st["message"].startswith("2 of 2 items failed")
    first = st["items"]["failedItems"][0]
    assert "ouptut: unknown param" in first["message"] and first["index"] in (0, 1)
    assert "item " in st["message"] and "ouptut" in st["message"]


# -- bad input (issue 14) ------------------------------------------------------------


def test_an_empty_list_and_a_list_past_items_max_fail_before_any_child() -> None:
    from respawn_operator.spec import ITEMS_MAX

    d = decide(parent([]), [])
    assert d.status.phase is Phase.FAILED and d.status.message == "foreach: the list of items is empty"
    assert not d.create and ("Warning", "InvalidItems", d.status.message) in d.events
    # Regression: the CRD caps inline items at ITEMS_MAX, but a ConfigMap's lines went
    # unchecked, so 100,001 items would have become 100,001 PipelineRuns.
    body = parent([])
    body["spec"]["foreach"] = {"param": "video_uri", "itemsFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    lines = [f"gs://b/v{i}.mp4" for i in range(100_001)]
    d = decide_parent(body, parse_spec(body["spec"]), lines, None, [], NOW)
    assert d.status.phase is Phase.FAILED and not d.create
    assert d.status.message == f"foreach: 100001 items, above the {ITEMS_MAX} one run may have (each is a PipelineRun)"
    d = decide_parent(body, parse_spec(body["spec"]), lines[:ITEMS_MAX], None, [], NOW)
    assert d.status.phase is Phase.PENDING and len(d.create) == 10  # exactly ITEMS_MAX is fine


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"parallelism": 0}, "spec.parallelism"),
        ({"parallelism": 10_001}, "spec.parallelism"),
        ({"maxFailedItems": -1}, "spec.maxFailedItems"),
        ({"foreach": {"param": "out", "items": [f"i{n}" for n in range(10_001)]}}, "spec.foreach.items"),
        ({"foreach": {"param": "out", "items": ["a", ""]}}, "spec.foreach.items[1]"),
        ({"foreach": {"param": "out", "items": ["a", "x" * 4097]}}, "spec.foreach.items[1]"),
        ({"foreach": {"param": "out", "items": ["a", 7]}}, "spec.foreach.items[1]"),
        ({"foreach": {"param": "out-x", "items": ["a"]}}, "spec.foreach.param"),
        ({"foreach": {"items": ["a"]}}, "spec.foreach.param"),
    ],
)
def test_the_crd_schema_refuses_bad_fan_out_fields_at_apply(cluster: Cluster, spec: dict[str, Any], field: str) -> None:
    from respawn_local.apiserver import ApiError

    body = {
        "apiVersion": "respawn.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "refused", "namespace": NS},
        "spec": {"pipeline": "op_pipelines:Steps", "foreach": {"param": "out", "items": ["a"]}, **spec},
    }
    with pytest.raises(ApiError) as err:
        cluster.api.create(body, namespace=NS)
    assert err.value.code == 422 and field in err.value.message, err.value.message
    assert cluster.api.get_or_none("pipelineruns", "refused", NS) is None


def test_items_the_schema_cannot_judge_fail_the_parent_with_a_message_naming_the_field(cluster: Cluster) -> None:
    many = "\n".join(f"i{n}" for n in range(100_001))
    data = {"blank.txt": "\n  \n\n", "many.txt": many, "dup.txt": "a\nb\na\n"}
    cluster.api.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-items", "namespace": NS}, "data": data},
        namespace=NS,
    )
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "empty-inline": ({"items": []}, "foreach: the list of items is empty"),
        "empty-cm": (
            {"itemsFrom": {"configMapKeyRef": {"name": "bad-items", "key": "blank.txt"}}},
            "foreach: the list",
        ),
        "many-cm": (
            {"itemsFrom": {"configMapKeyRef": {"name": "bad-items", "key": "many.txt"}}},
            "foreach: 100001 items",
        ),
        "dup-cm": (
            {"itemsFrom": {"configMapKeyRef": {"name": "bad-items", "key": "dup.txt"}}},
            "foreach item 2 repeats",
        ),
        "no-key": (
            {"itemsFrom": {"configMapKeyRef": {"name": "bad-items", "key": "nope.txt"}}},
            "foreach.itemsFrom: ConfigMap bad-items has no key 'nope.txt'",
        ),
    }
    for name, (foreach, _) in cases.items():
        submit_parent(cluster, name, foreach)
    for name, (_, message) in cases.items():
        st = cluster.wait_phase(name, "Failed", timeout=60)
        assert st["message"].startswith(message), (name, st["message"])
        assert not children_of(cluster, name), f"{name}: no child starts"
        wait_for(
            lambda: "InvalidItems" in cluster.events(name), 30, f"{name}: its InvalidItems event"
        )  # after the status


def test_a_parent_name_too_long_for_its_children_is_shortened_and_runs(cluster: Cluster) -> None:
    name = "long-" + "n" * 248  # 253: the longest name; `<name>-<key>` would be 264
    out = cluster.tmp / "long.out"
    submit_parent(cluster, name, items([out]))
    st = cluster.wait_phase(name, "Succeeded", timeout=120)
    assert st["items"]["succeeded"] == 1 and out.read_text() == "a,b,c,d,e 11111\n"
    [kid] = children_of(cluster, name)
    kid_name = kid["metadata"]["name"]
    assert kid_name == child_name(name, str(out)) and len(kid_name) <= 63 and kid_name.startswith("long-nnn")
    assert all(len(j) <= 63 for j in cluster.jobs(kid_name)) and cluster.jobs(kid_name)
    assert len(kid["metadata"]["labels"]["respawn.dev/parent"]) <= 63

"""The reconciler reads a run from the watch and from its own status writes, not with a GET.

These drive ``reconciler.Reconciler`` against a fake API client (no server, no kopf): which
watch events start a round, which body a round decides on, and when it reads afresh.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from respawn_operator.config import OperatorConfig
from respawn_operator.kube import ApiError
from respawn_operator.reconciler import Reconciler

KEY = ("ns", "r")


class FakeApi:
    """One PipelineRun in a dict; records each request as (verb, resource)."""

    def __init__(self) -> None:
        self.run: dict[str, Any] = {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
            "spec": {"pipeline": "dataprep"},
        }
        self.rv = 1
        self.calls: list[tuple[str, str]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.on_patch: Any = None
        """Called with the stored run after a status write, before the answer (a racing watch)."""
        self.refuse_create: ApiError | None = None
        """Raised by every create (an API server refusing the Job)."""
        self.pods: list[dict[str, Any]] = []
        """What a LIST of pods answers."""

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.run)

    def change(self, **meta_or_spec: Any) -> dict[str, Any]:
        """Someone else changes the run: ``spec`` replaces the spec (new generation), else metadata."""
        self.rv += 1
        self.run["metadata"]["resourceVersion"] = str(self.rv)
        if "spec" in meta_or_spec:
            self.run["spec"] = meta_or_spec["spec"]
            self.run["metadata"]["generation"] += 1
        else:
            self.run["metadata"].update(meta_or_spec)
        return self.snapshot()

    async def get(self, res: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.calls.append(("get", res.plural))
        if res.plural == "pipelineruns":
            return self.snapshot()
        return copy.deepcopy(self.jobs.get(name))

    async def list(self, res: Any, namespace: str | None = None, *, labels: Any = None) -> list[dict[str, Any]]:
        self.calls.append(("list", res.plural))
        return copy.deepcopy(self.pods) if res.plural == "pods" else []

    async def create(self, res: Any, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("create", res.plural))
        if self.refuse_create is not None:
            raise self.refuse_create
        self.jobs[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    async def delete(self, res: Any, name: str, namespace: str | None = None, **_: Any) -> bool:
        self.calls.append(("delete", res.plural))
        return self.jobs.pop(name, None) is not None

    async def request(
        self, method: str, path: str, *, body: Any = None, params: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        if path.endswith("/events"):
            self.calls.append(("create", "events"))
            return {}
        assert method == "PATCH" and path.endswith("/status")
        self.calls.append(("patch", "pipelineruns/status"))
        for op in body:
            if op["op"] == "test" and (self.run.get("status") or {}).get("attempt") != op["value"]:
                raise ApiError(422, "Invalid", "test operation failed")
            if op["op"] == "add":
                self.run["status"] = copy.deepcopy(op["value"])
        self.rv += 1
        self.run["metadata"]["resourceVersion"] = str(self.rv)
        if self.on_patch is not None:
            self.on_patch(self.snapshot())
        return self.snapshot()


def reconciler(api: FakeApi) -> tuple[Reconciler, list[str]]:
    rec = Reconciler(api, OperatorConfig(default_checkpoint_uri="file:///ckpt"))  # type: ignore[arg-type]
    pokes: list[str] = []
    rec.poke = lambda namespace, name, delay=0.0: pokes.append(name)  # type: ignore[method-assign]
    rec.executor.poke = rec.poke  # the executor pokes after a status write that saw a change
    return rec, pokes


def test_a_new_run_is_started_from_its_watch_event_without_a_get() -> None:
    api = FakeApi()
    rec, pokes = reconciler(api)
    added = api.snapshot()
    assert rec.note_run(KEY, added)
    asyncio.run(rec.reconcile(*KEY))
    assert sorted(api.calls) == [("create", "events"), ("create", "jobs"), ("patch", "pipelineruns/status")]
    assert api.run["status"]["attempt"] == 1 and pokes == []

    # kopf's finalizer patch, made before our write, arrives after its answer: nothing new.
    older = copy.deepcopy(added)
    older["metadata"].update(resourceVersion="1a", finalizers=["respawn.dev/finalizer"])
    assert not rec.note_run(KEY, older)
    assert rec.runs.bodies[KEY]["status"]["attempt"] == 1  # still our write's answer
    # The echo of our write: nothing to do either.
    assert not rec.note_run(KEY, api.snapshot())
    assert KEY not in rec.runs.pending
    # kopf's annotations after the write change nothing the reconciler reads.
    assert not rec.note_run(KEY, api.change(annotations={"respawn.dev/x": "y"}))

    # A second round (e.g. a Job event) needs no GET of the run: attempt 1 is observed.
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert ("get", "pipelineruns") not in api.calls and ("get", "jobs") in api.calls
    assert api.run["status"]["attempt"] == 1


def test_a_spec_change_pokes_and_the_round_decides_on_the_new_spec() -> None:
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))
    assert not rec.note_run(KEY, api.snapshot())  # echo
    assert rec.note_run(KEY, api.change(spec={"pipeline": "dataprep", "suspend": True}))
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert ("get", "pipelineruns") not in api.calls
    assert api.run["status"]["attempts"][-1]["stopping"] == "Suspended"


def test_an_event_that_cannot_be_ordered_against_our_write_means_a_get() -> None:
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))
    # Before the echo, an event with a spec we never saw: older or newer than our write?
    odd = api.snapshot()
    odd["metadata"].update(resourceVersion="99", generation=7)
    odd["spec"] = {"pipeline": "dataprep", "suspend": True}
    assert rec.note_run(KEY, odd)
    assert KEY not in rec.runs.bodies and KEY not in rec.runs.pending
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert api.calls[0] == ("get", "pipelineruns")


def test_the_echo_can_beat_the_write_answer_and_later_events_win() -> None:
    api = FakeApi()
    rec, pokes = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    newer: list[dict[str, Any]] = []

    def racing_watch(stored: dict[str, Any]) -> None:
        assert not rec.note_run(KEY, stored)  # the echo, before the answer
        newer.append(api.change(spec={"pipeline": "dataprep", "suspend": True}))
        assert not rec.note_run(KEY, newer[-1])  # and a user's edit right after it

    api.on_patch = racing_watch
    asyncio.run(rec.reconcile(*KEY))
    assert rec.runs.bodies[KEY] is newer[0] and KEY not in rec.runs.pending
    assert pokes == ["r"]  # the edit needs a round


def test_a_failed_status_write_reads_the_run_afresh() -> None:
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))
    rec.note_run(KEY, api.snapshot())  # echo: attempt 1
    api.run["status"]["attempt"] = 5  # another writer moved on; its event is not here yet
    api.jobs.clear()  # so this round has something to write (attempt 1's Job is gone)
    delay = asyncio.run(rec._reconcile_safely(KEY))
    assert delay == 0.05 and KEY not in rec.runs.bodies  # conflict: read again at once
    api.calls.clear()
    asyncio.run(rec._reconcile_safely(KEY))
    assert api.calls[0] == ("get", "pipelineruns")


def test_deleted_runs_are_forgotten() -> None:
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))
    rec.forget(KEY)
    assert KEY not in rec.runs.bodies and KEY not in rec.runs.pending and KEY not in rec.runs.seen


def child(name: str, rv: int, phase: str | None = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "resourceVersion": str(rv), "labels": {"respawn.dev/parent-uid": "p"}}
    return {"metadata": meta, "status": {"phase": phase} if phase else {}}


def test_the_child_index_lists_once_then_follows_the_watch() -> None:
    import time

    from respawn_operator.listers import ChildIndex

    index = ChildIndex(relist_seconds=300)
    index.note(child("stale", 3))  # watched before the list began; the list no longer has it
    assert index.children("p") is None  # never listed: the caller must list first
    started = time.monotonic()
    index.note(child("a", 9, "Running"))  # watched while the list was in flight: newer than the list's copy
    index.note(child("new", 10))  # created after the list began
    got = index.merge_listed("p", [child("a", 5, "Pending"), child("b", 6)], started)
    by_name = {c["metadata"]["name"]: c for c in got}
    assert sorted(by_name) == ["a", "b", "new"] and by_name["a"]["status"]["phase"] == "Running"
    index.note(child("b", 11, "Succeeded"))
    index.note(child("new", 12), deleted=True)
    index.note({"metadata": {"name": "plain", "resourceVersion": "13"}})  # not a child: ignored
    after = {c["metadata"]["name"]: c for c in index.children("p") or []}
    assert sorted(after) == ["a", "b"] and after["b"]["status"]["phase"] == "Succeeded"
    index.relist_seconds = -1.0  # any list is now older than that: the resync lists again
    assert index.children("p") is None


def test_a_job_the_api_server_refuses_fails_the_run_in_the_same_round() -> None:
    """The executor decides nothing: it reports the 422, and the round decides again with it."""
    api = FakeApi()
    rec, _ = reconciler(api)
    api.refuse_create = ApiError(422, "Invalid", "spec.template.spec.containers[0].resources.requests: Invalid value")
    rec.note_run(KEY, api.snapshot())
    assert asyncio.run(rec._reconcile_safely(KEY)) is None
    st = api.run["status"]
    assert st["phase"] == "Failed" and st["attempt"] == 0 and "resources.requests" in st["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Succeeded")["reason"] == "JobRejected"
    assert api.calls.count(("create", "jobs")) == 1 and api.jobs == {}


def test_a_job_name_held_by_another_run_is_retried_after_a_delay() -> None:
    """A run deleted and re-created under its name: the old run's Job awaits garbage collection."""
    from respawn_operator.workqueue import Retry

    api = FakeApi()
    rec, _ = reconciler(api)
    api.jobs["r-a1"] = {"metadata": {"name": "r-a1", "labels": {"respawn.dev/run-uid": "an-older-run"}}}
    api.refuse_create = ApiError(409, "AlreadyExists", "jobs.batch r-a1 already exists")
    rec.note_run(KEY, api.snapshot())
    try:
        asyncio.run(rec._reconcile_safely(KEY))
    except Retry as exc:
        assert "belongs to another run" in str(exc) and exc.after == 2.0
    else:
        raise AssertionError("expected a Retry")
    assert "status" not in api.run  # nothing written: the next round decides again


def pod(name: str, rv: int, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(rv)}, "status": {"phase": phase}}


def test_the_pod_cache_lists_an_attempt_once_then_follows_the_watch() -> None:
    import time

    from respawn_operator.listers import PodCache

    cache = PodCache(relist_seconds=300)
    assert cache.get("ns", "u", 1) is None  # nothing watched or listed: the caller lists first
    cache.store("ns", "u", "1", pod("deleted-unseen", 2), gone=False)  # watched, then deleted with no event
    assert [p["metadata"]["name"] for p, _ in cache.get("ns", "u", 1) or []] == ["deleted-unseen"]  # the watch runs
    started = time.monotonic()
    cache.store("ns", "u", "1", pod("p", 9, "Succeeded"), gone=False)  # watched while the list was in flight
    got = cache.merge_listed("ns", "u", 1, [pod("p", 5)], started)
    by_name = {p["metadata"]["name"]: (p, gone) for p, gone in got}
    assert by_name["p"][0]["status"]["phase"] == "Succeeded" and not by_name["p"][1]  # the newer watch event
    assert by_name["deleted-unseen"][1]  # seen before the list began, not in it: gone
    cache.store("ns", "u", "1", pod("p", 10, "Succeeded"), gone=True)  # its DELETED event
    assert [gone for _, gone in cache.get("ns", "u", 1) or []] == [True, True]
    cache.store("ns", "u", "2", pod("next", 11), gone=False)  # attempt 2: attempt 1's pods are dropped
    assert cache.get("ns", "u", 1) is None and len(cache.get("ns", "u", 2) or []) == 1
    cache.relist_seconds = 0.0  # RESPAWN_RESYNC_SECONDS=0: every look lists again
    assert cache.get("ns", "u", 2) is None
    listed = cache.merge_listed("ns", "u", 2, [pod("next", 12)], time.monotonic())
    assert [(p["metadata"]["resourceVersion"], gone) for p, gone in listed] == [("12", False)]  # what was listed
    cache.forget("ns", "u")
    assert cache.get("ns", "u", 2) is None


def test_a_round_reads_the_attempts_pods_from_the_cache_between_relists() -> None:
    """Requests a round makes: the Job and, while the watch has shown no pod of the attempt,
    the pods; then the Job only."""
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))  # attempt 1's Job
    rec.note_run(KEY, api.snapshot())
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert api.calls.count(("list", "pods")) == 1
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert ("list", "pods") not in api.calls and ("get", "jobs") in api.calls


def test_a_finished_job_with_the_pod_watch_behind_lists_the_pod_before_deciding() -> None:
    """Seen in CI (apif-2 under dropped watches): the Job, read fresh, said Complete while the
    pod watch still showed the pod running; the round called the attempt Succeeded from the
    Job alone, without the pod's report, and the run ended with no step counts. The ended
    pod must decide: a LIST of the attempt's pods first."""
    api = FakeApi()
    rec, _ = reconciler(api)
    rec.note_run(KEY, api.snapshot())
    asyncio.run(rec.reconcile(*KEY))  # attempt 1's Job
    job = api.jobs["r-a1"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    running = {"metadata": {"name": "r-a1-x", "resourceVersion": "5", "labels": labels}, "status": {"phase": "Running"}}
    rec.pods.store("ns", "u-1", "1", running, gone=False)  # the watch's last word
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    report = {"attempt": 1, "completedSteps": 5, "totalSteps": 5}
    ended = copy.deepcopy(running)
    ended["metadata"]["resourceVersion"] = "9"
    ended["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "pipeline", "state": {"terminated": {"exitCode": 0, "message": json.dumps(report)}}}
        ],
    }
    api.pods = [ended]
    rec.note_run(KEY, api.snapshot())
    api.calls.clear()
    asyncio.run(rec.reconcile(*KEY))
    assert api.calls.count(("list", "pods")) == 1
    st = api.run["status"]
    assert st["phase"] == "Succeeded"
    assert (st.get("completedSteps"), st.get("totalSteps")) == (5, 5), json.dumps(st)

"""Watches: replay from a resourceVersion, 410 Gone, selectors, timeouts, scopes."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from kubernetes import client, watch
from respawn_local.apiserver import ApiServerThread

from .helpers import auth_header, tls, widget

CM = "/api/v1/namespaces/default/configmaps"


def read_events(api: Any, path: str, stop_after: int | None = None, timeout: float = 10) -> list[dict[str, Any]]:
    """Read newline-delimited watch events until the server ends the stream (or `stop_after`)."""
    events = []
    with urllib.request.urlopen(
        urllib.request.Request(api.url + path, headers=auth_header(api)), timeout=timeout, context=tls(api)
    ) as resp:
        assert resp.status == 200
        for line in resp:
            events.append(json.loads(line))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def cm(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels}}


def test_watch_replays_after_resource_version(api: ApiServerThread) -> None:
    first = api.create(cm("a"))
    rv = first["metadata"]["resourceVersion"]
    api.patch("configmaps", "a", {"data": {"k": "v"}})
    api.create(cm("b"))
    api.delete("configmaps", "a")
    events = read_events(api, f"{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert events[0]["object"]["kind"] == "ConfigMap"


def test_watch_without_resource_version_starts_with_synthetic_added(api: ApiServerThread) -> None:
    api.create(cm("a"))
    api.create(cm("b"))
    events = read_events(api, f"{CM}?watch=1&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_too_old_resource_version_is_410_gone() -> None:
    with ApiServerThread(history_size=5) as api:
        rv = api.create(cm("a"))["metadata"]["resourceVersion"]
        for i in range(10):
            api.create(cm(f"x{i}"))
        events = read_events(api, f"{CM}?watch=true&resourceVersion={rv}")
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
        assert api.server.expired_watches == 1


def test_watch_streams_live_changes_with_selectors_across_namespaces(api: ApiServerThread) -> None:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    rv = str(api.call(lambda: api.server.rv))
    got: list[dict[str, Any]] = []
    path = f"/api/v1/configmaps?watch=true&resourceVersion={rv}&labelSelector=app%3Dx&timeoutSeconds=5"
    reader = threading.Thread(target=lambda: got.extend(read_events(api, path, stop_after=4)))
    reader.start()  # connected or not, the watch replays everything after rv
    api.create(cm("a", app="x"))
    api.create(cm("b", app="y"))  # filtered out
    api.create(cm("c", ns="other", app="x"))
    api.patch("configmaps", "a", {"metadata": {"labels": {"app": "gone"}}})  # leaves the selection
    api.patch("configmaps", "b", {"metadata": {"labels": {"app": "x"}}})  # enters it
    reader.join(10)
    assert [(e["type"], e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"]) for e in got] == [
        ("ADDED", "default", "a"),
        ("ADDED", "other", "c"),
        ("DELETED", "default", "a"),
        ("ADDED", "default", "b"),
    ]


def test_namespaced_watch_and_field_selector(api: ApiServerThread) -> None:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    rv = str(api.call(lambda: api.server.rv))
    api.create(cm("a", ns="other"))
    api.create(cm("a"))
    api.create(cm("b"))
    events = read_events(api, f"{CM}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Da&timeoutSeconds=1")
    assert [(e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"]) for e in events] == [
        ("default", "a")
    ]


def test_timeout_seconds_ends_the_stream(api: ApiServerThread) -> None:
    start = time.monotonic()
    assert read_events(api, f"{CM}?watch=true&resourceVersion=1&timeoutSeconds=1") == []
    assert 0.9 < time.monotonic() - start < 5


def test_kubernetes_client_list_then_watch_custom_objects(api: ApiServerThread, crd: Any, k8s: Any) -> None:
    co = client.CustomObjectsApi(k8s)
    api.create(widget("a"))
    listing = co.list_cluster_custom_object("test.respawn.dev", "v1", "widgets")
    assert isinstance(listing, dict)  # custom objects come back as plain JSON, typed `object`
    rv = listing["metadata"]["resourceVersion"]
    api.patch("widgets", "a", {"status": {"phase": "Running"}}, subresource="status")
    seen = []
    for ev in watch.Watch().stream(  # type: ignore[no-untyped-call]  # kubernetes.watch is unannotated
        co.list_cluster_custom_object, "test.respawn.dev", "v1", "widgets", resource_version=rv, timeout_seconds=1
    ):
        seen.append((ev["type"], ev["object"]["status"]["phase"]))
    assert seen == [("MODIFIED", "Running")]


def test_bookmarks_when_asked() -> None:
    with ApiServerThread(bookmark_interval=0.2) as api:
        events = read_events(
            api, f"{CM}?watch=true&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=5", stop_after=1
        )
        assert events[0]["type"] == "BOOKMARK" and events[0]["object"]["metadata"]["resourceVersion"]

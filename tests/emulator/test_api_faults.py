"""Fault injection and request counters."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from typing import Any

from respawn_local.apiserver import ApiServerThread
from respawn_local.testkit import wait_for

from .helpers import auth_header, http, tls

CM = "/api/v1/namespaces/default/configmaps"


def test_fail_next_requests_matching_a_predicate(api: ApiServerThread) -> None:
    api.faults.fail_next(2, status=500, match=lambda r: r.method == "POST")
    assert http(api, "GET", CM)[0] == 200
    status, body = http(api, "POST", CM, {"metadata": {"name": "a"}})
    assert status == 500 and body["kind"] == "Status" and body["reason"] == "InternalError"
    assert http(api, "POST", CM, {"metadata": {"name": "a"}})[0] == 500
    assert http(api, "POST", CM, {"metadata": {"name": "a"}})[0] == 201
    api.faults.fail_next(1, status=429, retry_after=1)
    req = urllib.request.Request(api.url + CM, headers=auth_header(api))
    try:
        urllib.request.urlopen(req, timeout=5, context=tls(api))
        raise AssertionError("expected 429")
    except urllib.error.HTTPError as e:
        assert e.code == 429 and e.headers["Retry-After"] == "1"
    assert api.faults.injected == 3


def test_close_watches_ends_open_streams(api: ApiServerThread) -> None:
    ended = threading.Event()

    def watch() -> None:
        with urllib.request.urlopen(
            urllib.request.Request(api.url + CM + "?watch=true&resourceVersion=1", headers=auth_header(api)),
            timeout=10,
            context=tls(api),
        ) as resp:
            for _ in resp:
                pass
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_for(lambda: api.call(lambda: len(api.server._watchers)) == 1, 5, "watch to open")
    assert api.faults.close_watches() == 1
    assert ended.wait(5)


def test_pause_hangs_requests_then_answers(api: ApiServerThread) -> None:
    api.faults.pause(0.5)
    start = time.monotonic()
    assert http(api, "GET", CM)[0] == 200
    assert time.monotonic() - start >= 0.4


def test_pause_refusing_connections_then_coming_back(api: ApiServerThread) -> None:
    import http.client as httpclient

    port = int(api.url.rsplit(":", 1)[1])
    keepalive = httpclient.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls(api))
    keepalive.request("GET", CM, headers=auth_header(api))
    assert keepalive.getresponse().read()
    api.faults.pause(0.5, refuse=True)
    # Open keep-alive connections are dropped too, not only new ones refused.
    try:
        keepalive.request("GET", CM, headers=auth_header(api))
        keepalive.getresponse().read()
        raise AssertionError("the kept-alive connection still answered")
    except (ConnectionError, httpclient.HTTPException, OSError):
        pass

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True

    assert refused()
    wait_for(lambda: not refused(), 5, "server to come back")
    assert http(api, "GET", CM)[0] == 200


def test_request_counters_by_verb_resource_and_agent(api: ApiServerThread, crd: Any) -> None:
    api.reset_counts()
    http(api, "GET", CM)
    http(api, "POST", CM, {"metadata": {"name": "a"}})
    http(api, "GET", CM + "/a")
    http(api, "PATCH", CM + "/a", {"data": {"x": "1"}}, content_type="application/merge-patch+json")
    http(api, "GET", CM + "?watch=true&timeoutSeconds=0")
    http(
        api,
        "POST",
        "/apis/test.respawn.dev/v1/namespaces/default/widgets",
        {"apiVersion": "test.respawn.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}},
    )
    http(
        api,
        "PATCH",
        "/apis/test.respawn.dev/v1/namespaces/default/widgets/w/status",
        {"status": {"a": 1}},
        content_type="application/merge-patch+json",
    )
    http(api, "DELETE", CM + "/a")
    counts = api.request_counts()
    assert counts == {
        ("list", "configmaps"): 1,
        ("create", "configmaps"): 1,
        ("get", "configmaps"): 1,
        ("patch", "configmaps"): 1,
        ("watch", "configmaps"): 1,
        ("create", "widgets"): 1,
        ("patch", "widgets/status"): 1,
        ("delete", "configmaps"): 1,
    }
    assert sum(api.request_counts(agent="Python-urllib").values()) == 8
    assert api.request_counts(agent="kopf") == {}
    assert json.dumps(list(api.server.request_log)[-1])  # (method, path, agent, status) entries

"""A real kopf operator against the emulator: watching, patching, finalizers, events, re-watching."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from respawn_local.apiserver import ApiServerThread
from respawn_local.testkit import wait_for

from .helpers import widget

OPERATOR = textwrap.dedent('''
    import kopf

    # kopf's own kubeconfig reader looks at $KUBECONFIG when called; the kubernetes
    # client's (kopf's default) froze it when first imported.
    @kopf.on.login()
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 30
        settings.watching.reconnect_backoff = 0.1
        settings.persistence.finalizer = "test.respawn.dev/finalizer"

    @kopf.on.create("test.respawn.dev", "v1", "widgets")
    def created(spec, patch, body, **_):
        patch.status["phase"] = "Created"
        kopf.info(body, reason="Created", message="created a widget")
        return {"size": spec["size"]}

    @kopf.on.update("test.respawn.dev", "v1", "widgets", field="spec.size")
    def resized(new, patch, **_):
        patch.status["phase"] = f"Resized{new}"

    @kopf.on.delete("test.respawn.dev", "v1", "widgets")
    def deleted(name, **_):
        pass
''')


@pytest.fixture
def kopf_operator(
    api: ApiServerThread, crd: Any, kubeconfig: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    import kopf
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    path = tmp_path / "operator.py"
    path.write_text(OPERATOR)
    # A fresh registry: kopf's default one may already hold the respawn operator's
    # handlers (other test modules import respawn_operator.handlers).
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces", "--verbose", str(path)],
        timeout=60,
        registry=kopf.OperatorRegistry(),
    ) as runner:
        yield runner
    assert runner.exception is None, runner.output


def phase(api: ApiServerThread, name: str) -> str | None:
    obj = api.get_or_none("widgets", name)
    return ((obj or {}).get("status") or {}).get("phase")


def test_kopf_operator_handles_create_update_delete(api: ApiServerThread, kopf_operator: Any) -> None:
    api.create(widget("a", size=1))
    wait_for(lambda: phase(api, "a") == "Created", 60, "kopf's create handler")
    obj = api.get("widgets", "a")
    assert obj["metadata"]["finalizers"] == ["test.respawn.dev/finalizer"]
    assert obj["status"]["created"] == {"size": 1}  # handler results land in status
    assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
    wait_for(
        lambda: [e for e in api.list("events", "default") if e["involvedObject"]["name"] == "a"], 10, "kopf events"
    )

    api.patch("widgets", "a", {"spec": {"size": 2}})
    wait_for(lambda: phase(api, "a") == "Resized2", 60, "kopf's update handler")

    # A cut watch stream: kopf re-watches and keeps reacting.
    api.faults.close_watches()
    api.create(widget("b", size=3))
    wait_for(lambda: phase(api, "b") == "Created", 60, "kopf after a re-watch")

    api.delete("widgets", "a")
    wait_for(lambda: api.get_or_none("widgets", "a") is None, 60, "kopf to release its finalizer")
    counts = api.request_counts(agent="kopf")
    assert counts.get(("watch", "widgets"), 0) >= 2 and counts.get(("patch", "widgets"), 0) >= 1


def test_kopf_recovers_from_an_outage_and_410_gone(api: ApiServerThread, kopf_operator: Any) -> None:
    api.create(widget("first"))
    wait_for(lambda: phase(api, "first") == "Created", 60, "kopf to be up")
    api.call(lambda: setattr(api.server, "history_size", 3))
    api.faults.pause(1.0, refuse=True)  # kopf loses its watches and cannot reconnect for a while
    for i in range(6):  # meanwhile the history kopf would resume from is compacted away
        api.create(widget(f"w{i}"))
    wait_for(lambda: all(phase(api, f"w{i}") == "Created" for i in range(6)), 20, "kopf to relist after 410 Gone")
    assert api.server.expired_watches >= 1  # kopf came back with a compacted resourceVersion, got 410, relisted

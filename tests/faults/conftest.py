"""Fixtures of the fault-injection suite: the results recorder and small helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.results import OUT_ENV, Results
from tests.operator.harness import Cluster, running_cluster

_RESULTS: list[Results] = []


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    path = Path(os.environ.get(OUT_ENV) or tmp_path_factory.getbasetemp() / "reliability.json")
    found = Results(path)
    _RESULTS.append(found)
    yield found


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for found in _RESULTS:
        if found.records:
            terminalreporter.write_line(
                f"reliability results: {found.path} ({len(found.records)} records); "
                f"render with: python -m tests.faults.report {found.path}"
            )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("op-faults"), RESPAWN_CLEANUP_TIMEOUT_SECONDS="30") as c:
        yield c

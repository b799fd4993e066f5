"""Fixtures for the emulator suite: a fresh API server per test, clients, kubectl, podsim."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from respawn_local.apiserver import ApiServerThread
from respawn_local.podsim import PodSim

from .helpers import WIDGET_CRD


@pytest.fixture
def api() -> Iterator[ApiServerThread]:
    server = ApiServerThread(gc_interval=0.05)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def crd(api: ApiServerThread) -> dict[str, Any]:
    return api.create(WIDGET_CRD)


@pytest.fixture
def kubeconfig(api: ApiServerThread, tmp_path: Path) -> str:
    return api.write_kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def k8s(kubeconfig: str) -> Iterator[Any]:
    """A `kubernetes` ApiClient configured from the kubeconfig."""
    from kubernetes import config

    client = config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kubectl(kubeconfig: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    cache = tmp_path / "kube-cache"

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", str(cache), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture
def sim(api: ApiServerThread, tmp_path: Path) -> Iterator[PodSim]:
    simulator = PodSim.attached(api, work_dir=str(tmp_path / "podsim"))
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()
        assert simulator.errors == []

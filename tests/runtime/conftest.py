"""Run `pipeline-runtime` as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VENV_BIN

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


class RuntimeProcess(subprocess.Popen[str]):
    """A running `pipeline-runtime`, with the files its output and its termination record go to."""

    output_log: Path
    termination_log: Path


@dataclass
class Runtime:
    """Starts the CLI with the test pipelines importable and a termination log per process."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
        env["EXEC_LOG"] = str(self.tmp / "exec.log")
        env.update(self.env)
        env.update(extra or {})
        return env

    def start(self, args: Sequence[str], env: dict[str, str] | None = None) -> RuntimeProcess:
        self.count += 1
        term = self.tmp / f"termination-{self.count}.log"
        log = open(self.tmp / f"proc-{self.count}.log", "w")
        proc = RuntimeProcess(
            [str(VENV_BIN / "pipeline-runtime"), *args],
            env={**self._env(env), "RESPAWN_TERMINATION_LOG": str(term)},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.termination_log = term
        proc.output_log = self.tmp / f"proc-{self.count}.log"
        return proc

    def run(
        self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> tuple[int, str, dict[str, Any] | None]:
        """Run to the end: (exit code, output, termination record)."""
        proc = self.start(args, env)
        code = proc.wait(timeout)
        return code, output(proc), termination(proc)

    def inspect(self, uri: str, run_id: str, tenant: str = "default") -> dict[str, Any]:
        done = subprocess.run(
            [str(VENV_BIN / "pipeline-runtime"), "inspect", uri, "--run-id", run_id, "--tenant", tenant, "--json"],
            env=self._env(None),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def executions(self) -> list[tuple[str, int, int]]:
        path = self.tmp / "exec.log"
        if not path.exists():
            return []
        rows = [line.split() for line in path.read_text().splitlines()]
        return [(s, int(a), int(i)) for s, a, i in rows]


def run_argv(
    target: str,
    params: dict[str, Any],
    uri: str,
    attempt: int,
    run_id: str,
    retain: str = "Always",
    tenant: str | None = None,
    rerun_from: str | None = None,
) -> list[str]:
    """The arguments of `pipeline-runtime run` for `target` (module:Class) with `params`."""
    return [
        "run",
        target,
        "--params",
        json.dumps(params),
        "--run-id",
        run_id,
        "--checkpoint-uri",
        uri,
        "--attempt",
        str(attempt),
        "--retain",
        retain,
        *(["--tenant", tenant] if tenant else []),
        *(["--rerun-from", rerun_from] if rerun_from else []),
    ]


def output(proc: RuntimeProcess) -> str:
    return proc.output_log.read_text()


def termination(proc: RuntimeProcess) -> dict[str, Any] | None:
    path = proc.termination_log
    if not path.exists() or not path.read_text().strip():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime(tmp_path)

"""One exception base for the runtime: every run-ending error carries its own exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import pipeline_runtime
from pipeline_runtime.checkpoint import CorruptCheckpoint, Superseded
from pipeline_runtime.contracts import ExitCode
from pipeline_runtime.errors import (
    IncompatibleCheckpoint,
    InvalidInput,
    RespawnError,
    StepFailed,
    StopRequested,
    Terminated,
    exit_code_for,
)
from pipeline_runtime.storage.base import NotFound, OutsideStore, StoreMisconfigured, TransientStoreError


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidInput("x"), ExitCode.INVALID_INPUT, "InvalidInput"),
        (StoreMisconfigured("no bucket"), ExitCode.INVALID_INPUT, "InvalidInput"),
        (IncompatibleCheckpoint("x"), ExitCode.INCOMPATIBLE_CHECKPOINT, "IncompatibleCheckpoint"),
        (CorruptCheckpoint("x"), ExitCode.INCOMPATIBLE_CHECKPOINT, "IncompatibleCheckpoint"),
        (Superseded("x"), ExitCode.SUPERSEDED, "Superseded"),
        (TransientStoreError("x"), ExitCode.TRANSIENT_INFRA, "TransientInfra"),
        (Terminated("x"), ExitCode.TERMINATED, "Terminated"),
        (StopRequested(), ExitCode.TERMINATED, "Terminated"),
        (StepFailed("s", ValueError("boom")), ExitCode.STEP_FAILED, "StepFailed"),
        (NotFound("x"), ExitCode.STEP_FAILED, "StepFailed"),
        (OutsideStore("x"), ExitCode.STEP_FAILED, "StepFailed"),
        (ZeroDivisionError(), ExitCode.STEP_FAILED, "StepFailed"),  # anything a step raises
    ],
)
def test_each_way_a_run_ends_has_its_exit_code(error: BaseException, code: ExitCode, reason: str) -> None:
    assert exit_code_for(error) == (code, reason)


def test_every_exception_the_runtime_defines_derives_from_one_base() -> None:
    """The sample pipelines (pipeline_runtime.pipelines) are user code and may define their own."""
    strays = []
    for info in pkgutil.walk_packages(pipeline_runtime.__path__, "pipeline_runtime."):
        if info.name.startswith("pipeline_runtime.pipelines") or info.name.endswith("storage.gcs"):
            continue  # gcs imports google-cloud-storage (an extra); it defines no exception class
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            ours = inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
            if ours and not issubclass(obj, RespawnError) and obj is not StopRequested:
                strays.append(f"{module.__name__}.{name}")
    assert strays == [], f"subclass RespawnError (pipeline_runtime/errors.py): {strays}"


def test_errors_imports_only_the_contracts() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(pipeline_runtime.__file__).with_name("errors.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    assert imported == {"contracts"}

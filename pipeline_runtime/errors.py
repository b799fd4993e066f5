"""Exceptions that end a run, each tied to one exit code (contracts.ExitCode)."""

from __future__ import annotations

from .checkpoint import CorruptCheckpoint, Superseded
from .contracts import ExitCode
from .storage.base import StoreMisconfigured, TransientStoreError


class InvalidInput(Exception):
    """Bad params or configuration; start the message with the param's name (exit 64)."""


def parse_seconds(what: str, raw: object, *, low: float, high: float) -> float:
    """A number of seconds from a flag, an env twin or a keyword; InvalidInput naming `what` if not one."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: {raw!r} is not a number of seconds") from None
    if not low <= value <= high:  # also false for nan
        raise InvalidInput(f"{what}: {raw!r} is outside {low:g}..{high:g} seconds")
    return value


class IncompatibleCheckpoint(Exception):
    """The stored checkpoint cannot be used under the resume policy (exit 65)."""


class StepFailed(Exception):
    """A step raised (exit 1); the original exception is `__cause__`."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"step {step!r} failed: {type(error).__name__}: {error}")
        self.step = step


class Terminated(Exception):
    """SIGTERM: the run stopped at a safe point after committing (exit 143)."""


class StopRequested(BaseException):
    """Raised inside a step by `ctx.save_progress` after SIGTERM.

    A BaseException, so a step's broad `except Exception` does not swallow it.
    """


def exit_code_for(error: BaseException) -> tuple[ExitCode, str]:
    """Sort every way a run can end into (exit code, reason); the one place that does."""
    table: list[tuple[type[BaseException], ExitCode, str]] = [
        (InvalidInput, ExitCode.INVALID_INPUT, "InvalidInput"),
        (StoreMisconfigured, ExitCode.INVALID_INPUT, "InvalidInput"),
        (IncompatibleCheckpoint, ExitCode.INCOMPATIBLE_CHECKPOINT, "IncompatibleCheckpoint"),
        (CorruptCheckpoint, ExitCode.INCOMPATIBLE_CHECKPOINT, "IncompatibleCheckpoint"),
        (Superseded, ExitCode.SUPERSEDED, "Superseded"),
        (TransientStoreError, ExitCode.TRANSIENT_INFRA, "TransientInfra"),
        (Terminated, ExitCode.TERMINATED, "Terminated"),
        (StopRequested, ExitCode.TERMINATED, "Terminated"),
        (StepFailed, ExitCode.STEP_FAILED, "StepFailed"),
    ]
    for kind, code, reason in table:
        if isinstance(error, kind):
            return code, reason
    return ExitCode.STEP_FAILED, "StepFailed"

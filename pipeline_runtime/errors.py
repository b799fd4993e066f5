"""Every error the runtime raises on purpose, and the exit code a run that ends with it gets.

`RespawnError` is the one base: each subclass names its exit code and reason
(contracts.ExitCode), so :func:`exit_code_for` needs no table of other modules' classes
and this module imports nothing but the contracts. Store errors (storage/base.py) and
checkpoint errors (checkpoint.py) subclass it where they are defined.
"""

from __future__ import annotations

from typing import ClassVar

from .contracts import ExitCode, Reason


class RespawnError(Exception):
    """Base of the runtime's errors. A run ending with one exits with its `exit_code`;
    anything else a step raises is a step failure (exit 1)."""

    exit_code: ClassVar[ExitCode] = ExitCode.STEP_FAILED
    reason: ClassVar[str] = Reason.STEP_FAILED
    """The termination message's reason (what the operator and `kubectl describe` show)."""


class InvalidInput(RespawnError):
    """Bad params or configuration; start the message with the param's name (exit 64)."""

    exit_code = ExitCode.INVALID_INPUT
    reason = Reason.INVALID_INPUT


def parse_seconds(what: str, raw: object, *, low: float, high: float) -> float:
    """A number of seconds from a flag, an env twin or a keyword; InvalidInput naming `what` if not one."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: {raw!r} is not a number of seconds") from None
    if not low <= value <= high:  # also false for nan
        raise InvalidInput(f"{what}: {raw!r} is outside {low:g}..{high:g} seconds")
    return value


class IncompatibleCheckpoint(RespawnError):
    """The stored checkpoint cannot be used under the resume policy (exit 65)."""

    exit_code = ExitCode.INCOMPATIBLE_CHECKPOINT
    reason = Reason.INCOMPATIBLE_CHECKPOINT


class StepFailed(RespawnError):
    """A step raised (exit 1); the original exception is `__cause__`."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"step {step!r} failed: {type(error).__name__}: {error}")
        self.step = step


class Terminated(RespawnError):
    """SIGTERM: the run stopped at a safe point after committing (exit 143)."""

    exit_code = ExitCode.TERMINATED
    reason = Reason.TERMINATED


class StopRequested(BaseException):
    """Raised inside a step by `ctx.save_progress` after SIGTERM.

    A BaseException, so a step's broad `except Exception` does not swallow it.
    """


def exit_code_for(error: BaseException) -> tuple[ExitCode, str]:
    """Sort every way a run can end into (exit code, reason); the one place that does."""
    if isinstance(error, StopRequested):
        return ExitCode.TERMINATED, Reason.TERMINATED
    if isinstance(error, RespawnError):
        return type(error).exit_code, type(error).reason
    return ExitCode.STEP_FAILED, Reason.STEP_FAILED

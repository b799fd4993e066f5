"""Prove a pipeline resumes exactly: kill it at seeded moments, resume, compare (engine.py).

Names load lazily: `pipeline-runtime run` builds its parser with the `chaos` command in it
and must not pay for the engine's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import (
        CaseResult,
        ChaosConfig,
        ChaosReport,
        Difference,
        Finding,
        Interruption,
        run_chaos,
    )

SIGNALS = ("KILL", "TERM", "INT")
"""Signals a case may send at a random moment."""
MOMENTS = ("time", "storage", "both")
"""Where interruptions land: signals at random times, SIGKILL at storage operations, or both."""

__all__ = [
    "MOMENTS",
    "SIGNALS",
    "CaseResult",
    "ChaosConfig",
    "ChaosReport",
    "Difference",
    "Finding",
    "Interruption",
    "run_chaos",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)

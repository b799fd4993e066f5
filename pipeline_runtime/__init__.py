"""Preemption-safe pipelines: steps, fenced checkpoints, resume.

Names are loaded lazily so that `pipeline-runtime` can install its SIGTERM
handler before numpy and pydantic are imported (a pod may be stopped at any moment).

Layers (outer to inner, checked by import-linter: pyproject.toml): ``testing`` > ``chaos``
> ``cli`` > ``pipelines`` (the sample pipelines) > ``registry`` > ``pipeline`` (steps,
the run loop) > ``commit_worker``, ``resume`` > ``checkpoint`` (the commit log) >
``codec``, ``storage``, ``reporting``, ``lifecycle``, ``code_digest`` > ``errors``,
``extras`` > ``contracts`` (the pod-operator contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers; at run time they load lazily
    from .errors import IncompatibleCheckpoint, InvalidInput, StepFailed, Terminated
    from .pipeline import Pipeline, RunSummary, StepContext, step

__all__ = [
    "IncompatibleCheckpoint",
    "InvalidInput",
    "Pipeline",
    "RunSummary",
    "StepContext",
    "StepFailed",
    "Terminated",
    "step",
]

_WHERE = {
    "Pipeline": "pipeline",
    "StepContext": "pipeline",
    "RunSummary": "pipeline",
    "step": "pipeline",
    "InvalidInput": "errors",
    "IncompatibleCheckpoint": "errors",
    "StepFailed": "errors",
    "Terminated": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)

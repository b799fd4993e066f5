"""Test that your pipeline resumes exactly, in your own test suite.

    from pipeline_runtime.testing import assert_resumable

    def test_thumbnails_resume(tmp_path):
        assert_resumable(Thumbnails, {"n": 200, "out": str(tmp_path / "out" / "t.npz")},
                         kills=10, seed=1, compare_dir=tmp_path / "out")

or, with the `resumable` pytest fixture (a plugin this package registers):

    def test_thumbnails_resume(resumable):
        resumable(Thumbnails, {"n": 200}, kills=10)

The same engine as `pipeline-runtime chaos` (pipeline_runtime/chaos/engine.py): every
attempt is a real process, killed by a real signal or at a storage operation, then
resumed; the finished run must equal a clean run. The pipeline class must be
importable by its module name (the child processes import it again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["assert_resumable", "resumable"]


def _target(pipeline: Any) -> str:
    if isinstance(pipeline, str):
        return pipeline
    module, name = pipeline.__module__, pipeline.__qualname__
    if module == "__main__" or "<locals>" in name:
        raise ValueError(
            f"{name}: define the pipeline at the top level of an importable module "
            "(the chaos runs import it in their own processes)"
        )
    return f"{module}:{name}"


def assert_resumable(
    pipeline: Any,
    params: dict[str, Any] | None = None,
    *,
    kills: int = 10,
    seed: int = 0,
    signals: tuple[str, ...] = ("KILL", "TERM", "INT"),
    moments: str = "both",
    compare_dir: str | Path | None = None,
    workers: int = 1,
    workdir: str | Path | None = None,
    checkpoint_uri: str | None = None,
) -> Any:
    """Run a chaos session; raise AssertionError with the report when any run differs.
    Returns the report (a ChaosReport) when every run matched."""
    from .chaos.cli import render
    from .chaos.engine import ChaosConfig, run_chaos

    report = run_chaos(
        ChaosConfig(
            pipeline=_target(pipeline),
            params=dict(params or {}),
            kills=kills,
            seed=seed,
            signals=tuple(signals),
            moments=moments,
            compare_dir=str(compare_dir) if compare_dir is not None else None,
            workers=workers,
            workdir=Path(workdir) if workdir is not None else None,
            checkpoint_uri=checkpoint_uri,
        )
    )
    if not report.ok:
        raise AssertionError(render(report))
    return report


def _resumable(tmp_path: Path) -> Callable[..., Any]:
    """`resumable(Pipeline, params, **options)`: assert_resumable with its work under tmp_path."""

    def check(pipeline: Any, params: dict[str, Any] | None = None, **options: Any) -> Any:
        options.setdefault("workdir", tmp_path / "chaos")
        return assert_resumable(pipeline, params, **options)

    return check


try:  # the fixture exists where pytest does (this module is also its plugin: pytest11)
    import pytest
except ImportError:  # pragma: no cover - the runtime image has no pytest
    pass
else:
    resumable = pytest.fixture(_resumable, name="resumable")

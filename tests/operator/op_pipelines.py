"""Pipelines the operator's end-to-end tests run as real `pipeline-runtime` subprocesses.

Pods import this module through PYTHONPATH (set in the PipelineRun's spec.env). Each
step appends "<step> <attempt>" to $EXEC_LOG, so a test can tell which steps ran again
after a preemption.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from pipeline_runtime import Pipeline, step


class Steps(Pipeline):
    """Five short steps; ``e`` writes the steps' joint result to ``out``."""

    name = "op-steps"

    class Params(BaseModel):
        step_s: float = 0.4
        out: str = ""
        fail_in: str = ""
        """This step raises on every attempt (for the maxFailures test)."""

    def _work(self, ctx: Any, value: int) -> None:
        log = os.environ.get("EXEC_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{ctx.step_name} {ctx.attempt}\n")
        if ctx.params.fail_in == ctx.step_name:
            raise RuntimeError(f"step {ctx.step_name} is broken on purpose")
        time.sleep(ctx.params.step_s)
        ctx["trail"] = [*ctx.get("trail", []), ctx.step_name]
        ctx["total"] = ctx.get("total", 0) + value

    @step
    def a(self, ctx: Any) -> None:
        self._work(ctx, 1)

    @step
    def b(self, ctx: Any) -> None:
        self._work(ctx, 10)

    @step
    def c(self, ctx: Any) -> None:
        self._work(ctx, 100)

    @step
    def d(self, ctx: Any) -> None:
        self._work(ctx, 1000)

    @step
    def e(self, ctx: Any) -> None:
        self._work(ctx, 10000)
        if ctx.params.out:
            Path(ctx.params.out).write_text(f"{','.join(ctx['trail'])} {ctx['total']}\n")


class Items(Steps):
    """Steps for fan-out items: each logs its step starts to ``<out>.exec`` (the items of one
    parent share its env), and an ``out`` whose file name starts with ``bad`` is refused
    as a param (exit 64: the item fails at once, deterministically)."""

    name = "op-items"

    class Params(Steps.Params):
        @pydantic.field_validator("out")
        @classmethod
        def _not_bad(cls, v: str) -> str:
            if Path(v).name.startswith("bad"):
                raise ValueError("this item is refused on purpose")
            return v

    def _work(self, ctx: Any, value: int) -> None:
        with open(f"{ctx.params.out}.exec", "a") as f:
            f.write(f"{ctx.step_name} {ctx.attempt}\n")
        super()._work(ctx, value)

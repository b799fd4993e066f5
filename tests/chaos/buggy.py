"""Pipelines with the classic resumability bugs, one each, for `pipeline-runtime chaos`.

Each is small and fast; `Sound` is the same shape without the bug. Every step that a
bug lives in is named in the test that expects the chaos report to name it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline_runtime import Pipeline, step

TOTAL = 0
"""GlobalState's running total: module state a resumed process starts without."""


class Out(BaseModel):
    out: str = ""
    work_s: float = 0.02


class Sound(Pipeline):
    """Three steps, everything in ctx: resumes exactly."""

    name = "sound"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        ctx["x"] = np.arange(1000, dtype=np.int32)
        time.sleep(ctx.params.work_s)

    @step
    def scale(self, ctx: Any) -> None:
        ctx["y"] = ctx["x"] * 3
        time.sleep(ctx.params.work_s)

    @step(overlap=False)
    def save(self, ctx: Any) -> None:
        ctx["total"] = int(ctx["y"].sum())
        if ctx.params.out:
            Path(ctx.params.out).mkdir(parents=True, exist_ok=True)
            (Path(ctx.params.out) / "total.txt").write_text(f"{ctx['total']}\n")


class GlobalState(Pipeline):
    """`count` adds to a module global that `report` reads: a resume that skips `count` reports 0."""

    name = "global-state"
    Params = Out

    @step
    def count(self, ctx: Any) -> None:
        global TOTAL
        TOTAL += 41
        ctx["counted"] = True
        time.sleep(ctx.params.work_s)

    @step
    def report(self, ctx: Any) -> None:
        ctx["total"] = TOTAL
        time.sleep(ctx.params.work_s)

    @step
    def done(self, ctx: Any) -> None:
        ctx["done"] = True


class SelfState(Pipeline):
    """`load` keeps the scale on self; `apply` fails when a resume skipped `load`."""

    name = "self-state"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        self.scale = 3
        ctx["x"] = np.arange(10)
        time.sleep(ctx.params.work_s)

    @step
    def apply(self, ctx: Any) -> None:
        ctx["y"] = ctx["x"] * self.scale
        time.sleep(ctx.params.work_s)

    @step
    def done(self, ctx: Any) -> None:
        ctx["done"] = True


class Unseeded(Pipeline):
    """`augment` draws noise without a seed."""

    name = "unseeded"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        ctx["x"] = np.ones(100, dtype=np.float32)

    @step
    def augment(self, ctx: Any) -> None:
        ctx["noisy"] = ctx["x"] + np.random.default_rng().normal(size=100).astype(np.float32)


class LegacyRandom(Pipeline):
    """`jitter` draws from numpy's legacy global generator, never seeded."""

    name = "legacy-random"
    Params = Out

    @step
    def jitter(self, ctx: Any) -> None:
        ctx["offsets"] = np.random.rand(8)


class WallClock(Pipeline):
    """`stamp` stores the time it ran."""

    name = "wall-clock"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        ctx["x"] = [1, 2, 3]

    @step
    def stamp(self, ctx: Any) -> None:
        ctx["made_at"] = time.time()


class InPlace(Pipeline):
    """`normalize` changes the array `load` committed, in place."""

    name = "in-place"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        ctx["x"] = np.arange(100, dtype=np.float64)

    @step
    def normalize(self, ctx: Any) -> None:
        x = ctx["x"]
        x /= x.max()


class Appends(Pipeline):
    """`write` appends rows to its output file as it goes, saving progress between rows:
    resumed from saved progress, it writes again the rows after the last save."""

    name = "appends"
    Params = Out

    @step
    def load(self, ctx: Any) -> None:
        ctx["rows"] = 40

    @step
    def write(self, ctx: Any) -> None:
        Path(ctx.params.out).mkdir(parents=True, exist_ok=True)
        state = ctx.progress or {"i": 0}
        with open(Path(ctx.params.out) / "rows.csv", "a") as f:
            for i in range(state["i"], ctx["rows"]):
                f.write(f"{i},{i * i}\n")
                f.flush()
                time.sleep(0.01)
                ctx.save_progress({"i": i + 1})
        ctx["written"] = ctx["rows"]


class Outbox(Pipeline):
    """`publish` sends a message (appends it to an outbox file) with the default overlap: run
    again after a commit that did not land, it sends the message twice."""

    name = "outbox"
    Params = Out

    @step
    def build(self, ctx: Any) -> None:
        ctx["message"] = "dataset 7 is ready"
        time.sleep(ctx.params.work_s)

    @step
    def publish(self, ctx: Any) -> None:
        Path(ctx.params.out).mkdir(parents=True, exist_ok=True)
        with open(Path(ctx.params.out) / "outbox.txt", "a") as f:
            f.write(ctx["message"] + "\n")
        time.sleep(ctx.params.work_s)

    @step
    def after(self, ctx: Any) -> None:
        ctx["sent"] = True
        time.sleep(ctx.params.work_s)

"""Pipelines the runtime tests run as real `pipeline-runtime` subprocesses.

Each step appends "<step> <attempt> <start-index>" to $EXEC_LOG when it starts, so
tests can count executions. PausingStore (when $PAUSE_AT is set) announces a
chosen storage write through a marker file and then holds still, so a test can
kill the process at exactly that moment.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline_runtime import Pipeline, step
from pipeline_runtime.storage import Store


def record(step_name: str, attempt: int, start: int = 0) -> None:
    path = os.environ.get("EXEC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{step_name} {attempt} {start}\n")


class StoreWrapper:
    """Passes every call to `inner`; subclasses intercept what a test needs."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        self.inner.put(path, data, if_absent=if_absent)

    def get(self, path: str) -> bytes:
        return self.inner.get(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, path: str) -> None:
        self.inner.delete(path)


class PausingStore(StoreWrapper):
    """Wraps a store; at the write named by $PAUSE_AT, touch $PAUSE_MARKER and hang.

    PAUSE_AT: "artifact-before:N" (before the Nth artifact write starts),
    "commit-before:SEQ" (all artifacts of that commit are stored, the commit is not).
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.artifacts = 0
        self.when = os.environ.get("PAUSE_AT", "")

    def _pause(self) -> None:
        Path(os.environ["PAUSE_MARKER"]).write_text(str(os.getpid()))
        while True:  # the test kills us here
            time.sleep(0.05)

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        if "/artifacts/" in path:
            self.artifacts += 1
            if self.when == f"artifact-before:{self.artifacts}":
                self._pause()
        elif "/commits/" in path and self.when.startswith("commit-before:"):
            seq = int(self.when.split(":")[1])
            if path.endswith(f"{seq:08d}.json"):
                self._pause()
        self.inner.put(path, data, if_absent=if_absent)


class Chain(Pipeline):
    """Five steps, each deriving a few MB of arrays from the previous ones."""

    name = "chain"

    class Params(BaseModel):
        mb: int = 4
        work_s: float = 0.15
        out: str = ""
        block_attempt: int = 0
        """This attempt waits in step `c` until $RELEASE_FILE exists (split-brain tests)."""

    def open_store(self) -> Store | None:
        store = super().open_store()
        return PausingStore(store) if store is not None and os.environ.get("PAUSE_AT") else store

    def _derive(self, ctx: Any, key: str, salt: int) -> None:
        record(ctx.step_name, ctx.attempt)
        n = ctx.params.mb * 1024 * 1024
        prev = ctx.get("a", np.arange(n, dtype=np.uint8))
        ctx[key] = ((prev.astype(np.uint16) * 7 + salt) % 251).astype(np.uint8)
        ctx["a"] = ctx[key]
        ctx.setdefault("log", [])
        ctx["log"] = [*ctx["log"], key]
        time.sleep(ctx.params.work_s)  # stands for compute

    @step
    def a(self, ctx: Any) -> None:
        self._derive(ctx, "x1", 1)

    @step
    def b(self, ctx: Any) -> None:
        self._derive(ctx, "x2", 2)
        ctx["blob"] = bytes(range(256)) * 40

    @step
    def c(self, ctx: Any) -> None:
        self._derive(ctx, "x3", 3)
        if ctx.params.block_attempt == ctx.attempt:
            release = Path(os.environ["RELEASE_FILE"])
            Path(str(release) + ".waiting").write_text("1")
            while not release.exists():
                time.sleep(0.02)

    @step
    def d(self, ctx: Any) -> None:
        self._derive(ctx, "x4", 4)

    @step(overlap=False)  # writes the output file
    def e(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        digest = hashlib.sha256()
        for key in ("x1", "x2", "x3", "x4"):
            digest.update(np.ascontiguousarray(ctx[key]).tobytes())
        digest.update(ctx["blob"])
        digest.update(",".join(ctx["log"]).encode())
        ctx["digest"] = digest.hexdigest()
        if ctx.params.out:
            Path(ctx.params.out).write_text(ctx["digest"] + "\n")


class Counting(Pipeline):
    """One long step with intra-step progress: sums chunks, saving after each."""

    name = "counting"

    class Params(BaseModel):
        chunks: int = 200
        chunk_s: float = 0.01
        out: str = ""

    @step
    def prepare(self, ctx: Any) -> None:
        record("prepare", ctx.attempt)
        ctx["base"] = np.arange(1000, dtype=np.int64)

    @step
    def accumulate(self, ctx: Any) -> None:
        state = ctx.progress or {"i": 0, "parts": []}
        i, parts = state["i"], list(state["parts"])
        record("accumulate", ctx.attempt, i)
        while i < ctx.params.chunks:
            parts.append(ctx["base"] * i)
            i += 1
            time.sleep(ctx.params.chunk_s)  # stands for compute
            if i % 10 == 0:
                parts = [np.sum(parts, axis=0)]  # keep progress small
            ctx.save_progress({"i": i, "parts": parts})
        ctx["total"] = np.sum(parts, axis=0)

    @step
    def finish(self, ctx: Any) -> None:
        record("finish", ctx.attempt)
        if ctx.params.out:
            Path(ctx.params.out).write_text(str(int(ctx["total"].sum())) + "\n")


class Stubborn(Pipeline):
    """A step stuck in a call that never reaches a safe point."""

    name = "stubborn"

    @step
    def hang(self, ctx: Any) -> None:
        record("hang", ctx.attempt)
        time.sleep(3600)


class Broken(Pipeline):
    """Step two raises."""

    name = "broken"

    @step
    def one(self, ctx: Any) -> None:
        ctx["x"] = 1

    @step
    def two(self, ctx: Any) -> None:
        raise RuntimeError("the input is on fire")

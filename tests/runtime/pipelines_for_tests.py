"""Pipelines the runtime tests run as real `pipeline-runtime` subprocesses.

Each step appends "<step> <attempt> <start-index>" to $EXEC_LOG when it starts, so
tests can count executions. With $RESPAWN_CHAOS_PAUSE_AT set, Chain and Generated wrap
their store in the chaos engine's PausingStore (pipeline_runtime/chaos/store.py): it
announces a chosen storage operation through a marker file and holds still, so a
test can kill the process at exactly that moment. With $GATE set (see `gate`), Sweep
(tests/faults/pipelines.py) and Generated hold at a step's end or a storage operation
until the test releases them: what a stale attempt whose node comes back does.
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
from pipeline_runtime.chaos.judge import describe_value
from pipeline_runtime.chaos.store import ENV_PAUSE_AT, PausingStore, StoreWrapper
from pipeline_runtime.storage import Store

__all__ = ["GatedStore", "StoreWrapper", "describe_value", "gate", "record"]


def record(step_name: str, attempt: int, start: int = 0) -> None:
    path = os.environ.get("EXEC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{step_name} {attempt} {start}\n")


def gate(moment: str) -> None:
    """Hold at `moment` if $GATE names it, until $GATE_FILE exists."""
    if os.environ.get("GATE") != moment:
        return
    release = Path(os.environ["GATE_FILE"])
    Path(f"{release}.waiting").write_text(str(os.getpid()))
    while not release.exists():
        time.sleep(0.01)


class GatedStore(StoreWrapper):
    """Wraps a store; holds at the commit or artifact write named by $GATE."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.artifacts = 0
        self.deletes = 0

    def put(self, path: str, data: Any, *, if_absent: bool = False) -> None:
        if "/artifacts/" in path:
            self.artifacts += 1
            gate(f"artifact:{self.artifacts}")
        elif "/commits/" in path and if_absent:
            gate(f"commit:{int(path.rsplit('/', 1)[-1].split('.')[0])}")
        self.inner.put(path, data, if_absent=if_absent)

    def delete(self, path: str) -> None:
        self.deletes += 1
        gate(f"delete:{self.deletes}")  # cleanup: the tombstone is written, deletes follow
        self.inner.delete(path)


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
        return PausingStore.from_env(store) if store is not None and os.environ.get(ENV_PAUSE_AT) else store

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


GENERATED_STEPS = 5
"""Steps s0..s4 of `Generated`; its `plan` param says what each one does."""


def _recipe(name: str, i: int) -> Any:
    """A value of a kind resume must bring back exactly (collisions, tuples, scalars, layouts)."""
    values: dict[str, Any] = {
        "floats": np.linspace(0, i + 1, 4096, dtype=np.float32).reshape(64, 64),
        # Equal bytes, other dtype and shape: one artifact, two values. Over the inline limit
        # (codec.INLINE_ARRAY_LIMIT), or they would be kept in the commit and share nothing.
        "collide32": np.zeros((2, 512), np.int32),
        "collide64": np.zeros(512, np.int64),
        "zeros": bytes(32),
        "empty": np.zeros((0, 4), np.int32),
        "tuple": (i, "t", (1.5, None)),
        "scalar": np.float16(i + 0.5),
        "bigendian": np.asfortranarray(np.arange(600, dtype=">i4").reshape(20, 30)),
        "order": {"z": i, "a": [1, 2], "m": {"y": 1, "b": 2}},
        "bytearray": bytearray(b"x" * (1500 + i)),
        "bool": np.array([True, False] * 3).reshape(2, 3),
        "big": np.full(300_000, i, np.uint8),
    }
    return values[name]


class Generated(Pipeline):
    """Steps whose work a test draws: `plan[i] = [recipe, progress_iterations]`.

    Each step writes its recipe's value and a description of everything it read, so a
    value that came back wrong after a resume changes the output; the last step writes
    the description of the whole context, in key order, to `out`.
    """

    name = "generated"

    class Params(BaseModel):
        plan: list[tuple[str, int]]
        out: str = ""
        work_s: float = 0.02

    def open_store(self) -> Store | None:
        store = super().open_store()
        if store is not None and os.environ.get("GATE", "").startswith(("commit:", "artifact:", "delete:")):
            return GatedStore(store)
        return PausingStore.from_env(store) if store is not None and os.environ.get(ENV_PAUSE_AT) else store

    def _work(self, ctx: Any, i: int) -> None:
        if i >= len(ctx.params.plan):
            return
        recipe, iterations = ctx.params.plan[i]
        state = ctx.progress or {"i": 0, "acc": 0}
        record(ctx.step_name, ctx.attempt, state["i"])
        ctx[f"seen{i}"] = describe_value(dict(ctx))  # what this step read, as the clean run saw it
        acc = state["acc"]
        for n in range(state["i"], iterations):
            time.sleep(ctx.params.work_s)
            acc += n * (i + 1)
            ctx.save_progress({"i": n + 1, "acc": acc})
        ctx[f"v{i}"] = _recipe(recipe, i)
        ctx[f"acc{i}"] = acc
        time.sleep(ctx.params.work_s)
        gate(f"step:{ctx.step_name}")  # a stale attempt holds here, its step done, nothing committed

    @step
    def s0(self, ctx: Any) -> None:
        self._work(ctx, 0)

    @step
    def s1(self, ctx: Any) -> None:
        self._work(ctx, 1)

    @step
    def s2(self, ctx: Any) -> None:
        self._work(ctx, 2)

    @step
    def s3(self, ctx: Any) -> None:
        self._work(ctx, 3)

    @step(overlap=False)  # writes the output file
    def s4(self, ctx: Any) -> None:
        self._work(ctx, 4)
        if ctx.params.out:
            Path(ctx.params.out).write_text(describe_value(dict(ctx)) + "\n")

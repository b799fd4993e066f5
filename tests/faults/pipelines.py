"""Pipelines and store wrappers the fault scenarios run as real `pipeline-runtime` processes.

`Sweep` has seven steps of varied shapes: megabytes of arrays, small JSON, small
and large bytes, a list of arrays of very different sizes, a step that changes
nothing big (so nothing is uploaded again), and a long step with intra-step
progress. Its output is a digest of everything, so any lost or doubled work shows.

Gates make a process hold still at a chosen moment until the test releases it:
$GATE names the moment ("step:scan" at the end of a step's compute, "commit:5"
before commit 5 is created, "artifact:2" before the 2nd artifact write, "delete:1"
before the first delete of the cleanup that follows the tombstone) and
$GATE_FILE the release file; the process writes "$GATE_FILE.waiting" when it holds
(`gate` and `GatedStore` live in tests/runtime/pipelines_for_tests.py; Generated has them too).
Unlike PausingStore (tests/runtime/pipelines_for_tests.py), which hangs until
killed, a gated process carries on when released: that is what a split-brain
attempt whose node comes back does.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline_runtime import Pipeline, step
from pipeline_runtime.storage import Store
from tests.runtime.pipelines_for_tests import GatedStore, gate, record

SWEEP = "tests.faults.pipelines:Sweep"
CHAIN = "tests.runtime.pipelines_for_tests:Chain"


class Sweep(Pipeline):
    """Seven steps of varied sizes; `scan` saves intra-step progress."""

    name = "sweep"

    class Params(BaseModel):
        seed: int = 11
        mb: int = 2
        chunks: int = 12
        work_s: float = 0.03
        out: str = ""

    def open_store(self) -> Store | None:
        store = super().open_store()
        gated = os.environ.get("GATE", "").startswith(("commit:", "artifact:", "delete:"))
        return GatedStore(store) if store is not None and gated else store

    def _end(self, ctx: Any) -> None:
        time.sleep(ctx.params.work_s)  # stands for compute
        gate(f"step:{ctx.step_name}")

    @step
    def load(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        rng = np.random.default_rng(ctx.params.seed)
        ctx["raw"] = rng.integers(0, 256, size=ctx.params.mb * 1024 * 1024, dtype=np.uint8)
        ctx["meta"] = {"seed": ctx.params.seed, "n": int(ctx["raw"].size)}
        self._end(ctx)

    @step
    def stats(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        ctx["hist"] = np.bincount(ctx["raw"], minlength=256).astype(np.int64)
        ctx["tag"] = hashlib.sha256(ctx["raw"].tobytes()).digest()
        self._end(ctx)

    @step
    def scan(self, ctx: Any) -> None:
        state = ctx.progress or {"i": 0, "acc": np.zeros(256, np.int64)}
        i, acc = int(state["i"]), np.array(state["acc"], dtype=np.int64)
        record(ctx.step_name, ctx.attempt, i)
        n = ctx.params.chunks
        while i < n:
            part = ctx["raw"][i::n]
            acc = acc + np.bincount((part.astype(np.uint16) * (i + 1)) % 256, minlength=256)
            i += 1
            time.sleep(ctx.params.work_s)  # stands for compute
            ctx.save_progress({"i": i, "acc": acc})
        ctx["scan"] = acc
        gate(f"step:{ctx.step_name}")

    @step
    def shapes(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        ctx["pieces"] = [np.full(k, j, np.float32) for j, k in enumerate((3, 1000, 100_000, 700_000))]
        ctx["named"] = {"small": b"x" * 10, "large": bytes(range(256)) * 20, "n": 2}
        self._end(ctx)

    @step
    def touch(self, ctx: Any) -> None:
        # Only small JSON changes: the big values are committed again without an upload.
        record(ctx.step_name, ctx.attempt)
        ctx["note"] = f"{len(ctx['pieces'])} pieces, {ctx['meta']['n']} bytes"
        self._end(ctx)

    @step
    def mix(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        ctx["raw2"] = ((ctx["raw"].astype(np.uint16) * 5 + 3) % 251).astype(np.uint8)
        self._end(ctx)

    @step(overlap=False)  # writes the output: only once every earlier commit landed
    def finish(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        digest = hashlib.sha256()
        for key in ("raw", "hist", "scan", "raw2"):
            digest.update(np.ascontiguousarray(ctx[key]).tobytes())
        for piece in ctx["pieces"]:
            digest.update(piece.tobytes())
        digest.update(ctx["tag"] + ctx["named"]["small"] + ctx["named"]["large"])
        # sort_keys: a resumed context's dicts come back key-sorted (test_resume_determinism)
        digest.update(json.dumps([ctx["meta"], ctx["note"]], sort_keys=True).encode())
        ctx["digest"] = digest.hexdigest()
        self._end(ctx)
        if ctx.params.out:
            Path(ctx.params.out).write_text(ctx["digest"] + "\n")


SWEEP_STEPS = ["load", "stats", "scan", "shapes", "touch", "mix", "finish"]
CHAIN_STEPS = ["a", "b", "c", "d", "e"]


class Ordered(Pipeline):
    """A dict in the context whose key order matters to the output (as it does for any
    step that writes rows, columns or JSON in dict order)."""

    name = "ordered"

    class Params(BaseModel):
        out: str = ""

    @step
    def build(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        ctx["columns"] = {"zeta": 1, "alpha": 2, "mid": 3}
        ctx["mixed"] = {"zeta": np.arange(3), "alpha": b"x" * 2000}

    @step
    def write(self, ctx: Any) -> None:
        record(ctx.step_name, ctx.attempt)
        if ctx.params.out:
            Path(ctx.params.out).write_text(",".join(ctx["columns"]) + ";" + ",".join(ctx["mixed"]) + "\n")

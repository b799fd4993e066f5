"""A custom pipeline: tiled thumbnails of random images, with intra-step progress.

Run it locally (twice, killing the first run halfway, to see it resume):

    PYTHONPATH=examples pipeline-runtime run custom_pipeline:Thumbnails \
        --run-id thumbs --params '{"n": 400, "out": "thumbs.npz"}'

In a PipelineRun: build an image FROM the Respawn pipeline image with this module on the
PYTHONPATH (or installed with an entry point in the `respawn.pipelines` group)
and set `spec.pipeline: custom_pipeline:Thumbnails`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from pipeline_runtime import InvalidInput, Pipeline, step


class Thumbnails(Pipeline):
    name = "thumbnails"
    version = "1"

    class Params(BaseModel):
        n: int = Field(10, ge=1, description="how many images")
        size: int = Field(64, ge=8, le=1024, description="side of the source images")
        seed: int = 0
        out: str = ""

    @step
    def load(self, ctx: Any) -> None:
        if ctx.params.size % 2:
            raise InvalidInput("size: must be even, thumbnails halve it")
        rng = np.random.default_rng(ctx.params.seed)
        ctx["frames"] = rng.integers(0, 256, (ctx.params.n, ctx.params.size, ctx.params.size), dtype=np.uint8)

    @step
    def shrink(self, ctx: Any) -> None:
        # Saves progress every 50 images: a SIGTERM here costs at most 50 images of work.
        state = ctx.progress or {"done": 0, "parts": []}
        done, parts = state["done"], list(state["parts"])
        frames = ctx["frames"]
        while done < len(frames):
            batch = frames[done : done + 50]
            parts.append(((batch[:, ::2, ::2].astype(np.uint16) + batch[:, 1::2, 1::2]) // 2).astype(np.uint8))
            done += len(batch)
            ctx.save_progress({"done": done, "parts": parts})
        ctx["small"] = np.concatenate(parts)

    @step
    def save(self, ctx: Any) -> None:
        ctx["mean"] = float(ctx["small"].mean())
        if ctx.params.out:
            np.savez(ctx.params.out, small=ctx["small"])

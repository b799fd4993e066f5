"""Checkpoint cost, as ratios against plain file I/O measured in the same process.

    .venv/bin/python bench/bench_checkpoint.py [--gib 1.0] [--parts 16] [--dir /tmp] [--rounds 3] [--repeat 5] [--figures 1234]

Figures (issue 2 targets in brackets):
  1. commit of N GiB of numpy arrays to file://  vs  open().write() of the same bytes [<= 1.15x]
  2. a second commit where nothing large changed: wall time and bytes uploaded [<= 50 ms, 0 B]
  3. resume (RunLog.latest() + decode of its context, every artifact verified)  vs  a plain
     open().read() of the same files, kept in memory [<= 1.2x at 0.1 GiB, <= 1.0x at 1 GiB:
     issue 17; `--gib 0.1 --parts 1` is the one 100 MB array case, <= 1.2x]
  4. a 10-step pipeline (~1 s compute per step on ~100 MB of arrays) with checkpoints
     after every step  vs  checkpointing off [<= 3 % overhead]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline_runtime import Pipeline, step
from pipeline_runtime.checkpoint import Commit, Kind, RunLog
from pipeline_runtime.codec import Encoder, decode, snapshot
from pipeline_runtime.storage.local import FileStore


def make_context(gib: float, parts: int = 16) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = int(gib * 2**30) // parts
    return {f"part{i}": rng.integers(0, 255, n, dtype=np.uint8) for i in range(parts)}


def plain_write(ctx: dict[str, Any], folder: Path, fsync: bool) -> float:
    folder.mkdir(parents=True)
    t = time.perf_counter()
    for key, arr in ctx.items():
        with open(folder / key, "wb") as f:
            f.write(memoryview(arr))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return time.perf_counter() - t


def plain_read(folder: Path, keep: bool = True) -> float:
    """open().read() of every file. `keep`: hold on to what was read, as a resume must (each
    read then lands in fresh memory; dropping it lets the next read reuse the last one's
    pages, which on this VM is up to 4x faster than touching new memory)."""
    kept = []
    t = time.perf_counter()
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as f:
            data = f.read()
            if keep:
                kept.append(data)
    took = time.perf_counter() - t
    del kept
    return took


def commit(
    ctx: dict[str, Any], log: RunLog, enc: Encoder, pool: ThreadPoolExecutor, seq: int
) -> tuple[float, int, Any]:
    t = time.perf_counter()
    node, uploaded = enc.resolve(snapshot(ctx), pool)
    log.append(
        seq,
        Commit(
            kind=Kind.STEP,
            attempt=1,
            pipeline_name="bench",
            run_guid="b",
            completed_steps=[],
            context=node,
            steps_summary={},
        ),
    )
    return time.perf_counter() - t, uploaded, node


def resume(log: RunLog, pool: ThreadPoolExecutor) -> tuple[float, Any]:
    """What an attempt does to get its state back: find the newest commit, decode its context."""
    t = time.perf_counter()
    latest = log.latest()
    assert latest is not None and isinstance(latest.body, Commit) and latest.body.context is not None
    back = decode(latest.body.context, log.get_artifact, None, pool, get_into=log.artifact_reader)
    return time.perf_counter() - t, back


def bench_commit_and_resume(gib: float, base: Path, fsync: bool, rounds: int, repeat: int, parts: int = 16) -> None:
    ctx = make_context(gib, parts)
    size = sum(a.nbytes for a in ctx.values())
    writes, commits, reads, loads, dropped = [], [], [], [], []
    second: list[tuple[float, int]] = []
    for i in range(rounds):
        plain = base / f"plain{i}"
        store = FileStore(f"file://{base}/ck{i}", durable=fsync)
        log = RunLog(store, "t", "r")
        pool = ThreadPoolExecutor(4)
        fresh = {k: v.copy() for k, v in ctx.items()}  # new objects: nothing cached
        enc = Encoder(log.put_artifact)
        if i % 2:  # which goes first alternates: the second one's disk still flushes the first's writes
            writes.append(plain_write(ctx, plain, fsync))
        took, uploaded, _ = commit(fresh, log, enc, pool, 1)
        if not i % 2:
            writes.append(plain_write(ctx, plain, fsync))
        assert uploaded == size
        commits.append(took)
        took2, uploaded2, _ = commit(fresh, log, enc, pool, 2)
        second.append((took2, uploaded2))
        # Both read from a warm page cache. Repeated, alternating which goes first: on this
        # VM the first touch of memory the guest has not used lately costs up to 10x, and
        # that, not reading, decides a single try.
        # A durable put leaves nothing in the page cache (storage/local.py, O_DIRECT): read
        # the artifacts once, so that both sides below read from a warm cache.
        resume(log, pool)
        pairs = []
        for j in range(repeat):
            if (i + j) % 2:
                took3, back = resume(log, pool)
                pairs.append((took3, plain_read(plain)))
            else:
                plain_took = plain_read(plain)
                took3, back = resume(log, pool)
                pairs.append((took3, plain_took))
            if j < repeat - 1:
                del back
        loads.append(statistics.median(a for a, _ in pairs))
        reads.append(statistics.median(b for _, b in pairs))
        dropped.append(plain_read(plain, keep=False))
        assert all(np.array_equal(back[k], ctx[k]) for k in ctx)
        del back, fresh
        shutil.rmtree(plain)
        shutil.rmtree(base / f"ck{i}")
    w, c, r, ld = (statistics.median(x) for x in (writes, commits, reads, loads))
    label = "write+fsync" if fsync else "write"
    paired = sorted(a / b for a, b in zip(commits, writes, strict=True))  # a round's two are neighbours in time
    print(
        f"[1] commit {size / 2**30:.2f} GiB ({len(ctx)} arrays) to file:// (fsync={fsync}): {c:.3f}s; "
        f"plain {label}: {w:.3f}s; ratio {statistics.median(paired):.2f}x  (median of {rounds} rounds' "
        f"own ratios, {paired[0]:.2f}..{paired[-1]:.2f}x; of the medians {c / w:.2f}x)"
    )
    s_t = statistics.median(t for t, _ in second)
    print(f"[2] second commit, nothing changed: {s_t * 1000:.1f} ms, {max(u for _, u in second)} bytes uploaded")
    ratios = sorted(a / b for a, b in zip(loads, reads))
    print(
        f"[3] resume (latest + decode, verified) {ld:.3f}s; plain read {r:.3f}s; ratio {ld / r:.2f}x "
        f"(median of {rounds} rounds x {repeat}) "
        f"(per round {ratios[0]:.2f}..{ratios[-1]:.2f}x); a read that keeps nothing: "
        f"{statistics.median(dropped):.3f}s"
    )


class TenSteps(Pipeline):
    name = "ten-steps"

    class Params(BaseModel):
        mb: int = 100
        seconds: float = 1.0

    def _work(self, ctx: Any, i: int) -> None:
        n = ctx.params.mb * 2**20 // 8
        prev = ctx.get("state", np.zeros(n))
        deadline = time.perf_counter() + ctx.params.seconds
        out = prev + i
        while time.perf_counter() < deadline:  # compute that holds a core, like real work
            np.sin(out[: n // 50])
        ctx["state"] = out
        ctx[f"summary{i}"] = float(out[:10].sum())


for _i in range(10):

    def _make(i: int) -> Any:
        def fn(self: TenSteps, ctx: Any) -> None:
            self._work(ctx, i)

        fn.__name__ = f"step{i}"
        return step(fn)

    setattr(TenSteps, f"step{_i}", _make(_i))


def bench_pipeline_overhead(base: Path, fsync: bool) -> None:
    off, on = [], []
    for i in range(2):
        t = time.perf_counter()
        TenSteps(checkpoint_uri=None).run()
        off.append(time.perf_counter() - t)
        store = FileStore(f"file://{base}/p{i}", durable=fsync)
        t = time.perf_counter()
        TenSteps(store=store, run_id=f"p{i}", retain="Always").run()
        on.append(time.perf_counter() - t)
    a, b = min(off), min(on)
    print(
        f"[4] 10 steps x ~1 s on 100 MB arrays: checkpointing off {a:.2f}s, "
        f"on (file://, fsync={fsync}) {b:.2f}s; overhead {100 * (b - a) / a:+.1f}%"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--parts", type=int, default=16, help="arrays the GiB are split into ([1]-[3])")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--no-fsync", action="store_true", help="compare without fsync on both sides")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="resume/plain read pairs per round ([3])")
    ap.add_argument("--figures", default="1234", help="which figures to measure ([1]-[3] come together)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="respawn-bench-", dir=args.dir))
    try:
        if set(args.figures) & set("123"):
            bench_commit_and_resume(args.gib, base, not args.no_fsync, args.rounds, args.repeat, args.parts)
        if "4" in args.figures:
            bench_pipeline_overhead(base, not args.no_fsync)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Checkpoint cost with fixed work: whole processes, interleaved, against a plain loop.

    .venv/bin/python bench/bench_fixed_work.py [--steps 10] [--step-seconds 1.0] [--mb 100] [--rounds 5]

The workload: `--steps` steps, each a fixed amount of numpy work (calibrated once, in
this process, to take about `--step-seconds`) that turns a `--mb` MB float32 array into
a new one. A step that is slowed down by a background commit takes longer: nothing
here waits until a deadline (issue 17: bench_checkpoint.py's busy-wait steps could
not show that cost).

Each round runs, as separate whole processes (interpreter start and imports
included) and in an order that rotates every round:

  plain      the same steps as a plain Python loop, no pipeline_runtime
  off        Respawn with checkpointing off (`checkpoint_uri=None`)
  on         Respawn committing every step to file:// (fsync on, as in a pod)
  savez      the plain loop plus `np.savez` of the state after every step

--no-savez leaves the last one out. --palindrome runs every round a second time in reverse
order (plain off on on off plain), so a drift that is steady over the round falls on every
mode alike; a round's figure is then the ratio of the two runs' sums. With --diagnose, also `on-nofsync` (file:// without
fsync: not what a pod runs, it only says how much of the cost is the fsync).

Printed: each mode's median, and each overhead (on vs off, off vs plain, savez vs plain)
as the median of the rounds' own ratios, with the lowest and highest round beside it; and
the CPU seconds a run with checkpoints spends beyond one without (what the commits cost a
2-core machine, whether or not they overlap the next step). Use at least 5 rounds; on this
shared VM 9 keep the overheads within about a percent from one session to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from host import HostWatch  # bench/, on the path as the script's folder

HERE = Path(__file__).resolve().parent


def work(a: Any, iters: int) -> Any:
    """The fixed work of one step: a new array made from `a` (what a step produces, and a
    commit stores), then `iters` in-place passes of elementwise arithmetic over it.

    Two things the first version of this workload got wrong (2026-12-02):
    - Its passes (`sqrt(x * 1.0001 + 0.5)`) converged to a fixed point within a step, so
      from step 2 on every step produced the same bytes and 9 of 10 commits uploaded
      nothing (content addressing found them stored): on vs off measured hashing only.
      `fmod` keeps the values moving, so every step's array is new.
    - Each pass made two fresh 100 MB temporaries: half of a run was the kernel zeroing
      62 GB of new mappings a run, which on this VM swings by 10 % from run to run (huge
      pages or not, pages the host took back), more than the cost being measured. In-place
      passes fault in one new array per step.
    """
    import numpy as np

    out = a * np.float32(1.0001)
    for _ in range(iters):
        np.multiply(out, np.float32(1.0001), out=out)
        np.add(out, np.float32(0.5), out=out)
        np.fmod(out, np.float32(7.0), out=out)
    return out


def _initial(mb: int) -> Any:
    import numpy as np

    return np.linspace(0, 1, mb * 1024 * 1024 // 4, dtype=np.float32)


def child(mode: str, steps: int, iters: int, mb: int, folder: str) -> None:
    """One whole run of `mode` (this is the measured process)."""
    if mode in ("plain", "savez"):
        import numpy as np

        a = _initial(mb)
        for i in range(steps):
            a = work(a, iters)
            if mode == "savez":
                with open(os.path.join(folder, f"state-{i}.npz"), "wb") as f:
                    np.savez(f, a=a)
                    f.flush()
                    os.fsync(f.fileno())
        print(json.dumps({"checksum": float(a[::4096].sum())}))
        return
    from pydantic import BaseModel

    from pipeline_runtime import Pipeline, step

    class Params(BaseModel):
        iters: int
        mb: int

    def make_step(i: int) -> Any:
        def body(self: Any, ctx: Any) -> None:
            ctx["a"] = work(ctx["a"] if i else _initial(ctx.params.mb), ctx.params.iters)

        body.__name__ = f"s{i}"
        return step(body)

    attrs: dict[str, Any] = {"name": "fixed-work", "Params": Params}
    attrs.update({f"s{i}": make_step(i) for i in range(steps)})
    workload = type("FixedWork", (Pipeline,), attrs)
    uri = f"file://{folder}/ck" if mode.startswith("on") else None
    store = None
    if mode == "on-nofsync":
        from pipeline_runtime.storage.local import FileStore

        store = FileStore(f"file://{folder}/ck", durable=False)
    workload({"iters": iters, "mb": mb}, checkpoint_uri=uri, store=store, run_id="bench", retain="Always").run()
    print(json.dumps({"done": True}))


def calibrate(step_seconds: float, mb: int) -> int:
    """The passes a step needs to take about `step_seconds` (its new array included)."""
    a = _initial(mb)
    work(a, 1)  # warm the allocator

    def timed(iters: int) -> float:
        started = time.perf_counter()
        work(a, iters)
        return time.perf_counter() - started

    one, nine = min(timed(1) for _ in range(3)), min(timed(9) for _ in range(3))
    per_pass = max(1e-6, (nine - one) / 8)
    return max(1, round((step_seconds - (one - per_pass)) / per_pass))


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole child process, which must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, f"{cmd[:3]}: {(done.stdout + done.stderr)[-3000:]}"
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(mode: str, steps: int, iters: int, mb: int, python: str = sys.executable) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole child process of `mode`."""
    folder = tempfile.mkdtemp(prefix=f"bench-{mode}-")
    try:
        args = ["--child", mode, "--steps", str(steps), "--iters", str(iters), "--mb", str(mb), "--dir", folder]
        return run_timed([python, __file__, *args])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def workload_arguments(ap: argparse.ArgumentParser) -> None:
    """The workload's flags, shared with bench_peers.py (and the measured child's own)."""
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--step-seconds", type=float, default=1.0)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", default=None)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--dir", default="")


def spread(runs: list[float]) -> str:
    return f"{min(runs):.2f}-{max(runs):.2f} s"


def figure(wall: dict[str, list[float]], a: str, b: str, label: str, target: str) -> None:
    """`a` vs `b` as the median of the per-round ratios (`wall`: each round's seconds per mode).

    Why per round: on this VM the speed of the same fixed work drifts by 10-30 % over tens
    of seconds (a neighbour on the host; one run's steps went 0.89 s -> 1.33 s), far more
    than the costs measured here. A round's runs are each other's neighbours in time, so
    their ratio cancels most of the drift that a ratio of separate medians keeps.
    """
    ratios = sorted(x / y - 1 for x, y in zip(wall[a], wall[b], strict=True))
    of_medians = statistics.median(wall[a]) / statistics.median(wall[b]) - 1
    low, high = bootstrap_interval(ratios)
    print(
        f"  {label:<24}{100 * statistics.median(ratios):+6.1f} %   (90 % interval {100 * low:+.1f} .. {100 * high:+.1f} %; "
        f"rounds {100 * ratios[0]:+.1f} .. {100 * ratios[-1]:+.1f} %; of medians {100 * of_medians:+.1f} %)  {target}"
    )


def bootstrap_interval(values: list[float], draws: int = 2000) -> tuple[float, float]:
    """A 90 % percentile-bootstrap interval of the median of `values` (seeded: the same
    rounds print the same interval). It says how far the printed median can be trusted."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]


def round_order(modes: list[str], r: int, palindrome: bool) -> list[str]:
    """The runs of round `r`: the modes rotated by `r` (no mode always goes first) and, with
    `palindrome`, then again in reverse (a b c c b a).

    Why a palindrome: on this VM the speed of the same work drifts within a round, and a
    steady drift makes whichever mode runs later look slower. Run twice in mirrored order,
    every mode's two runs sit at the same mean time, so a drift that is linear over the
    round cancels out of the ratio of their sums (an ABBA design)."""
    k = r % len(modes)
    order = modes[k:] + modes[:k]
    return order + order[::-1] if palindrome else order


def main() -> None:
    ap = argparse.ArgumentParser()
    workload_arguments(ap)
    ap.add_argument("--diagnose", action="store_true", help="also measure file:// without fsync")
    ap.add_argument("--no-savez", action="store_true", help="leave out np.savez: a quarter more rounds an hour")
    ap.add_argument(
        "--palindrome",
        action="store_true",
        help="run each round twice, the second time in reverse order (cancels a steady drift; twice the time)",
    )
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.iters, args.mb, args.dir)
        return
    iters = calibrate(args.step_seconds, args.mb)
    modes = ["plain", "off", "on"] + ([] if args.no_savez else ["savez"]) + (["on-nofsync"] if args.diagnose else [])
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    per_round: dict[str, list[float]] = {m: [] for m in modes}
    watch = HostWatch()
    for r in range(args.rounds):
        order = round_order(modes, r, args.palindrome)
        for mode in order:
            w, c = measure(mode, args.steps, iters, args.mb)
            wall[mode].append(w)
            cpu[mode].append(c)
        for mode in modes:
            per_round[mode].append(sum(wall[mode][-order.count(mode) :]))
    med = {m: statistics.median(wall[m]) for m in modes}
    cpu_med = {m: statistics.median(cpu[m]) for m in modes}
    print(
        f"{args.steps} steps x {iters} passes over {args.mb} MB float32 (~{args.step_seconds:g} s a step), "
        f"whole processes, {args.rounds} interleaved rounds{' (palindromic: a b c c b a)' if args.palindrome else ''}"
    )
    for m in modes:
        print(f"  {m:<10} {med[m]:7.2f} s wall  {cpu_med[m]:7.2f} s CPU   (median; runs {spread(wall[m])})")
    print("  overheads: median of the rounds' own ratios (each round's runs are neighbours in time),")
    print("  its bootstrap interval, the lowest and highest round, and the ratio of the medians above")
    figure(per_round, "on", "off", "checkpoints on vs off", "[<= +3 %]")
    figure(per_round, "off", "plain", "off vs a plain loop", "[<= +2 %]")
    if "savez" in modes:
        figure(per_round, "savez", "plain", "np.savez vs plain loop", "")
    if args.diagnose:
        figure(per_round, "on-nofsync", "off", "on without fsync vs off", "(diagnosis only)")
    print(
        f"  CPU the commits take    {cpu_med['on'] - cpu_med['off']:6.2f} s "
        f"({(cpu_med['on'] - cpu_med['off']) / args.steps:.3f} s per {args.mb} MB commit)"
    )
    print(f"  {watch.describe()}")


if __name__ == "__main__":
    main()

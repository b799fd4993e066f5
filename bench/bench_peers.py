"""Respawn against what people use instead, on one fixed-work workload (issue 17).

    .venv/bin/python bench/bench_peers.py [--steps 10] [--step-seconds 1.0] [--mb 100] [--rounds 5]
        [--peer-python PATH]

The workload is bench_fixed_work.py's: `--steps` steps, each a fixed amount of numpy work
(calibrated once) on a `--mb` MB float32 array, whole processes timed (interpreter start
and imports included), rounds interleaved in a rotating order, medians printed. Each way
of keeping the state after every step is compared with a plain loop run by the same
interpreter, so a peer installed in another venv (`--peer-python`) is measured against
that venv's own numpy:

  plain        the steps as a plain Python loop (one per interpreter)
  respawn      Respawn, committing every step to file:// with fsync (as in a pod)
  respawn-off  Respawn with checkpointing off
  savez        the plain loop plus np.savez of the state after every step, fsynced
  pickle       the plain loop plus pickle.dump of the state after every step, fsynced
  metaflow     a linear Metaflow flow, one step per step, the array as an artifact
               (local datastore); only where `--peer-python` can import metaflow
  prefect      a Prefect flow, one task per step, results persisted to local storage;
               only where `--peer-python` can import prefect

A peer that is not installed is named, with what to install; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fixed_work import _initial, calibrate, run_timed, work, workload_arguments

METAFLOW_FLOW = '''
import sys
sys.path.insert(0, {here!r})
from bench_fixed_work import _initial, work
from metaflow import FlowSpec, step

STEPS, ITERS, MB = {steps}, {iters}, {mb}


class FixedWork(FlowSpec):
{methods}

if __name__ == "__main__":
    FixedWork()
'''

PREFECT_FLOW = '''
import sys
sys.path.insert(0, {here!r})
from bench_fixed_work import _initial, work
from prefect import flow, task

STEPS, ITERS, MB = {steps}, {iters}, {mb}


@task(persist_result=True, cache_policy=None)
def one_step(a):
    return work(a, ITERS)


@flow(persist_result=True)
def fixed_work():
    a = _initial(MB)
    for _ in range(STEPS):
        a = one_step(a)
    return float(a[::4096].sum())


if __name__ == "__main__":
    fixed_work()
'''


def metaflow_methods(steps: int) -> str:
    """`start` makes the array, then one `@step` per step, each calling the fixed work."""
    out = ["    @step\n    def start(self):\n        self.a = _initial(MB)\n        self.next(self.s0)\n"]
    for i in range(steps):
        nxt = f"self.s{i + 1}" if i + 1 < steps else "self.end"
        out.append(f"    @step\n    def s{i}(self):\n        self.a = work(self.a, ITERS)\n        self.next({nxt})\n")
    out.append("    @step\n    def end(self):\n        pass\n")
    return "\n".join(out)


def child(mode: str, steps: int, iters: int, mb: int, folder: str) -> None:
    """The measured process of the pickle mode (the others run bench_fixed_work's or a flow)."""
    import pickle

    a = _initial(mb)
    for i in range(steps):
        a = work(a, iters)
        with open(os.path.join(folder, f"state-{i}.pkl"), "wb") as f:
            pickle.dump(a, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())


def can_import(python: str, module: str) -> bool:
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return done.returncode == 0


def run_mode(mode: str, python: str, steps: int, iters: int, mb: int) -> tuple[float, float]:
    folder = tempfile.mkdtemp(prefix=f"bench-peers-{mode}-")
    try:
        common = ["--steps", str(steps), "--iters", str(iters), "--mb", str(mb), "--dir", folder]
        fixed = {"plain": "plain", "respawn": "on", "respawn-off": "off", "savez": "savez"}
        if mode in fixed:
            return run_timed([python, str(HERE / "bench_fixed_work.py"), "--child", fixed[mode], *common])
        if mode == "pickle":
            return run_timed([python, __file__, "--child", "pickle", *common])
        env = {**os.environ, "HOME": folder, "USERNAME": "bench"}
        if mode == "metaflow":
            flow = Path(folder) / "fixed_work_flow.py"
            flow.write_text(
                METAFLOW_FLOW.format(here=str(HERE), steps=steps, iters=iters, mb=mb, methods=metaflow_methods(steps))
            )
            env.update(METAFLOW_DEFAULT_DATASTORE="local", METAFLOW_DATASTORE_SYSROOT_LOCAL=folder)
            return run_timed([python, str(flow), "--quiet", "--no-pylint", "run"], env=env)
        if mode == "prefect":
            flow = Path(folder) / "fixed_work_prefect.py"
            flow.write_text(PREFECT_FLOW.format(here=str(HERE), steps=steps, iters=iters, mb=mb))
            env.update(
                PREFECT_HOME=os.path.join(folder, "prefect"),
                PREFECT_LOCAL_STORAGE_PATH=os.path.join(folder, "results"),
                PREFECT_API_URL="",  # a temporary local server, on loopback
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
            )
            return run_timed([python, str(flow)], env=env)
        raise ValueError(mode)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    workload_arguments(ap)
    ap.add_argument("--peer-python", default=sys.executable, help="an interpreter with metaflow and/or prefect")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.iters, args.mb, args.dir)
        return
    iters = calibrate(args.step_seconds, args.mb)
    ours = sys.executable
    peer = args.peer_python
    runs: list[tuple[str, str]] = [(m, ours) for m in ("plain", "respawn", "respawn-off", "savez", "pickle")]
    missing = []
    for module in ("metaflow", "prefect"):
        if can_import(peer, module):
            runs.append((module, peer))
        else:
            missing.append(module)
    if peer != ours and any(p == peer for _, p in runs):
        runs.append(("plain", peer))
    wall: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    for r in range(args.rounds):
        for key in runs[r % len(runs) :] + runs[: r % len(runs)]:  # rotate: no mode always goes first
            wall[key].append(run_mode(key[0], key[1], args.steps, iters, args.mb)[0])
    med = {key: statistics.median(v) for key, v in wall.items()}
    print(
        f"{args.steps} steps x {iters} passes over {args.mb} MB float32 (~{args.step_seconds:g} s a step), "
        f"whole processes, median of {args.rounds} interleaved rounds"
    )
    for (mode, python), seconds in med.items():
        base = med[("plain", python)]
        where = "" if python == ours else f"  ({python})"
        print(f"  {mode:<12} {seconds:7.2f} s   {100 * (seconds / base - 1):+7.1f} % vs a plain loop{where}")
    for module in missing:
        print(f"  {module:<12} not measured: {peer} cannot import it (pip install {module}, or --peer-python)")


if __name__ == "__main__":
    main()

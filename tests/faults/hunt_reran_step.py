"""Hunt for issue 10 item 7: `inspect --json` right after a SIGKILL lists a step as completed,
and the resumed attempt runs it again.

Not a test (no pytest collects it): an experiment that loads the machine and repeats

    start Chain (five steps of arrays, bytes and a list; file://, durable) as attempt 1,
    SIGKILL it at a seeded moment (anywhere in a clean run's time, or just after the
    k-th step finished, while its commit is in flight in the background worker),
    `inspect --json`, then resume as attempt 2 and wait for it,

and compares what inspect listed with what attempt 2 claimed (its claim commit's
completed_steps, read from the raw JSON file) and ran (EXEC_LOG). Every disagreement is
printed with the whole history. Run it under the shared lock:

    flock /work/heavy.lock env PYTHONPATH=$PWD/operator:$PWD .venv/bin/python \\
        -m tests.faults.hunt_reran_step --seconds 600 --workers 2 --hogs 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import run_args
from tests.runtime.conftest import Runtime, output

STEPS = ["a", "b", "c", "d", "e"]


def raw_history(root: Path, run_id: str) -> list[dict[str, Any]]:
    folder = root / "default" / run_id / "commits"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"))]


def one_case(seed: int, workdir: Path, clean_seconds: float) -> dict[str, Any]:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(dir=workdir))
    rt, out, uri = Runtime(tmp), tmp / "out.txt", f"file://{tmp}/ck"
    argv = run_args("chain", uri, out, 1, run_id="hunt")
    targeted = rng.random() < 0.5
    k, delay = rng.randint(1, 4), rng.uniform(0.0, 0.25)
    at = rng.uniform(0.3, clean_seconds)
    proc = rt.start(argv, {"RESPAWN_PROGRESS_INTERVAL_SECONDS": "0.05"})
    started = time.monotonic()
    if targeted:
        while proc.poll() is None and output(proc).count('"event": "step_done"') < k:
            time.sleep(0.002)
        time.sleep(delay)
    else:
        while proc.poll() is None and time.monotonic() - started < at:
            time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    code1 = proc.wait(60)
    result: dict[str, Any] = {"seed": seed, "moment": f"after step {k} +{delay:.3f}s" if targeted else f"{at:.2f}s"}
    result["exit1"] = code1
    try:
        info = rt.inspect(uri, "hunt")
    except AssertionError:
        info = {"completed_steps": [], "seq": None}
    result["inspect"] = info["completed_steps"]
    code2, text, term = rt.run(run_args("chain", uri, out, 2, run_id="hunt"), env={})
    history = raw_history(tmp / "ck", "hunt")
    claim2 = next((h for h in history if h.get("kind") == "claim" and h.get("attempt") == 2), None)
    result["claimed"] = claim2["completed_steps"] if claim2 else None
    result["ran"] = [s for s, a, _ in rt.executions() if a == 2]
    result["exit2"] = code2
    result["message"] = (term or {}).get("message")
    rerun = [s for s in result["ran"] if s in (result["inspect"] or [])]
    wrong = code2 != 0 or rerun or (claim2 is not None and claim2["completed_steps"] != result["inspect"])
    if wrong:
        result["history"] = [
            {k: h.get(k) for k in ("seq", "kind", "attempt", "step", "completed_steps", "at")} for h in history
        ]
        result["output2"] = text[-3000:]
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    result["wrong"] = bool(wrong)
    return result


def hog(io_path: Path) -> list[subprocess.Popen[bytes]]:
    """One CPU hog under nice, one writer that fsyncs (the durable store fsyncs every object)."""
    cpu = subprocess.Popen(["nice", "-n", "5", sys.executable, "-c", "while True: pass"])
    io = subprocess.Popen(
        [
            "sh",
            "-c",
            f"while true; do dd if=/dev/zero of={io_path} bs=1M count=64 conv=fsync status=none; done",
        ]
    )
    return [cpu, io]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hogs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hunt-"))
    hogs: list[subprocess.Popen[bytes]] = []
    for i in range(args.hogs):
        hogs += hog(workdir / f"io-{i}")
    try:
        ref = Runtime(workdir)
        t0 = time.monotonic()
        code, text, _ = ref.run(run_args("chain", f"file://{workdir}/ref", workdir / "ref.out", 1, run_id="ref"))
        clean_seconds = time.monotonic() - t0
        assert code == 0, text
        print(f"clean run under load: {clean_seconds:.2f}s", flush=True)
        seeds = iter(range(args.seed, args.seed + 10**6))
        lock = threading.Lock()
        found: list[dict[str, Any]] = []
        count = [0]
        deadline = time.monotonic() + args.seconds

        def worker() -> None:
            while time.monotonic() < deadline:
                with lock:
                    seed = next(seeds)
                r = one_case(seed, workdir, clean_seconds)
                with lock:
                    count[0] += 1
                    if r["wrong"]:
                        found.append(r)
                        print("FOUND", json.dumps(r), flush=True)
                    elif count[0] % 20 == 0:
                        print(f"{count[0]} cases, {len(found)} disagreements; last {json.dumps(r)}", flush=True)

        threads = [threading.Thread(target=worker) for _ in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"cases": count[0], "disagreements": len(found), "workdir": str(workdir)}), flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        for p in workdir.glob("io-*"):
            os.unlink(p)


if __name__ == "__main__":
    main()

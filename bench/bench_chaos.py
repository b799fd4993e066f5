"""Cost of a chaos session, as a ratio against clean runs measured in the same process.

    .venv/bin/python bench/bench_chaos.py [--kills 10] [--frames 240] [--rounds 3]

On the shipped dataprep pipeline (a synthetic video, grid crops, --compare-dir on the
output): the wall time of `pipeline-runtime chaos --kills N` with --workers 1 and 2,
against N + 2 clean runs of the same command one after the other (the work a session
cannot avoid: two references and one finished run per case). The clean runs bracket
each session, half just before it and half just after, so a neighbour's load on this
shared machine falls on both sides of a ratio; each figure is the median of --rounds
rounds. Issue 12's target: <= 1.3x with --workers 1, and --workers 2 faster than
--workers 1 on a 2-core machine.

Besides the wall-time ratio it prints the CPU-time ratio of --workers 1 (what the
processes did, less sensitive to neighbours), and what the interruptions cost: how
many of the planned ones landed (a signal planned for a moment after the attempt has
ended, or a storage operation it no longer reaches, finishes first and costs nothing),
and the seconds the cases' attempts ran beyond one clean run each, per landed
interruption (the work each kill threw away plus a restart, less the imports a forked
attempt skips).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from host import HostWatch  # bench/, on the path as the script's folder
from respawn_local.sample_video import make_video

EXE = [sys.executable, "-m", "pipeline_runtime.cli"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def clean_runs(folder: Path, params: dict[str, str], n: int, tag: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `n` clean runs one after the other."""
    started, cpu = time.perf_counter(), children_cpu()
    for i in range(n):
        done = subprocess.run(
            [
                *EXE,
                "run",
                "dataprep",
                "--params",
                json.dumps(params),
                "--run-id",
                f"clean{tag}-{i}",
                "--checkpoint-uri",
                f"file://{folder}/ck",
                "--retain",
                "Always",
            ],
            cwd=folder,
            capture_output=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    return time.perf_counter() - started, children_cpu() - cpu


def session(folder: Path, params: dict[str, str], kills: int, workers: int, seed: int) -> dict[str, Any]:
    started, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(
        [
            *EXE,
            "chaos",
            "dataprep",
            "--params",
            json.dumps(params),
            "--compare-dir",
            "out",
            "--kills",
            str(kills),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
            "--json",
        ],
        cwd=folder,
        capture_output=True,
        check=False,
    )
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], done.stdout.decode()[-3000:]
    cases = report["cases"]
    attempts = [a for c in cases for a in c["attempts"]]
    return {
        "wall": wall,
        "cpu": cpu,
        "attempts": len(attempts),
        "ran": sum(a["seconds"] for a in attempts),
        "planned": sum(len(c["plan"]) for c in cases),
        "landed": sum(1 for a in attempts if a["interruption"] and not a["finished_first"]),
        "cleanups": sum(1 for c in cases if c["cleanup"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="round r runs the sessions of seed first-seed + r")
    args = ap.parse_args()
    n = args.kills + 2
    before, after = n // 2, n - n // 2
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        folder = Path(tmp)
        make_video(folder / "clip.mp4", frames=args.frames, width=640, height=360)
        params = {"video_uri": "clip.mp4", "output_uri": "out", "mode": "grid", "crop_size": 96}
        rows: dict[str, list[float]] = {k: [] for k in ("w1", "w2", "cpu", "one", "ran", "landed", "planned", "att")}
        whole = HostWatch()
        for r in range(args.rounds):
            watch = HostWatch()
            c0 = clean_runs(folder, params, before, f"{r}a")
            w1 = session(folder, params, args.kills, 1, seed=args.first_seed + r)
            c1 = clean_runs(folder, params, after, f"{r}b")
            c2 = clean_runs(folder, params, before, f"{r}c")
            w2 = session(folder, params, args.kills, 2, seed=args.first_seed + r)
            c3 = clean_runs(folder, params, after, f"{r}d")
            clean1, clean2 = c0[0] + c1[0], c2[0] + c3[0]
            rows["w1"].append(w1["wall"] / clean1)
            rows["w2"].append(w2["wall"] / clean2)
            rows["cpu"].append(w1["cpu"] / (c0[1] + c1[1]))
            rows["one"].append(clean1 / n)
            for key, value in (("ran", w1["ran"]), ("landed", w1["landed"]), ("planned", w1["planned"])):
                rows[key].append(value)
            rows["att"].append(w1["attempts"])
            print(
                f"  round {r} (seed {args.first_seed + r}): clean run {clean1 / n:.2f}s; --workers 1 {w1['wall']:.2f}s = {rows['w1'][-1]:.2f}x "
                f"(CPU {rows['cpu'][-1]:.2f}x), {w1['landed']}/{w1['planned']} interruptions landed, "
                f"{w1['attempts']} attempts ran {w1['ran']:.2f}s; --workers 2 {w2['wall']:.2f}s = {rows['w2'][-1]:.2f}x\n"
                f"    {watch.describe()}",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(
            f"dataprep, {args.frames} frames 640x360, grid: one clean run {med['one']:.2f}s; "
            f"{args.kills} kills, median of {args.rounds} rounds, each against {n} clean runs around it"
        )
        print(f"  chaos --workers 1   {med['w1']:.2f}x the clean runs' wall time  [target <= 1.3x]")
        print(f"                      {med['cpu']:.2f}x their CPU time")
        print(
            f"    interruptions: {med['landed']:.0f} of {med['planned']:.0f} planned landed; the cases' "
            f"{med['att']:.0f} attempts ran {med['ran']:.2f}s, "
            f"{(med['ran'] - args.kills * med['one']) / max(1, med['landed']):+.2f}s beyond {args.kills} clean runs "
            "per landed interruption"
        )
        print(
            f"  chaos --workers 2   {med['w2']:.2f}x  (speed-up {med['w2'] and med['w1'] / med['w2']:.2f}x over 1 worker)"
        )
        print(f"  {whole.describe()}")


if __name__ == "__main__":
    main()

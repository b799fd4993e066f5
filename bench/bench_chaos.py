"""Cost of a chaos session, as a ratio against clean runs measured in the same process.

    .venv/bin/python bench/bench_chaos.py [--kills 10] [--frames 240] [--rounds 3]

On the shipped dataprep pipeline (a synthetic video, grid crops, --compare-dir on the
output): the wall time of `pipeline-runtime chaos --kills N` with --workers 1 and 2,
against N + 2 clean runs of the same command one after the other (the work a session
cannot avoid: two references and one finished run per case). Each figure is the
median of --rounds interleaved rounds. Issue 12's target: <= 1.3x with --workers 1,
and --workers 2 faster than --workers 1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from respawn_local.sample_video import make_video

EXE = [sys.executable, "-m", "pipeline_runtime.cli"]


def clean_runs(folder: Path, params: dict[str, str], n: int, round_: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        done = subprocess.run(
            [
                *EXE,
                "run",
                "dataprep",
                "--params",
                json.dumps(params),
                "--run-id",
                f"clean{round_}-{i}",
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
    return time.perf_counter() - started


def session(folder: Path, params: dict[str, str], kills: int, workers: int, seed: int) -> tuple[float, float, int]:
    """(wall seconds, seconds its attempts ran, attempts)."""
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], done.stdout.decode()[-3000:]
    attempts = [a for c in report["cases"] for a in c["attempts"]]
    return seconds, sum(a["seconds"] for a in attempts), len(attempts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        folder = Path(tmp)
        make_video(folder / "clip.mp4", frames=args.frames, width=640, height=360)
        params = {"video_uri": "clip.mp4", "output_uri": "out", "mode": "grid", "crop_size": 96}
        rows: dict[str, list[float]] = {"clean": [], "w1": [], "w2": [], "ran": [], "attempts": []}
        for r in range(args.rounds):
            rows["clean"].append(clean_runs(folder, params, args.kills + 2, r))
            wall, ran, attempts = session(folder, params, args.kills, 1, seed=r)
            rows["w1"].append(wall)
            rows["ran"].append(ran)
            rows["attempts"].append(attempts)
            rows["w2"].append(session(folder, params, args.kills, 2, seed=r)[0])
        clean, w1, w2, ran, attempts = (statistics.median(rows[k]) for k in ("clean", "w1", "w2", "ran", "attempts"))
        one = clean / (args.kills + 2)
        print(
            f"dataprep, {args.frames} frames 640x360, grid: one clean run {one:.2f}s; "
            f"{args.kills} kills, median of {args.rounds}"
        )
        print(f"  {args.kills + 2} clean runs          {clean:7.2f}s")
        print(f"  chaos --workers 1         {w1:7.2f}s   {w1 / clean:.2f}x  [<= 1.3x]")
        print(
            f"    of which the cases' {attempts:.0f} attempts ran {ran:.2f}s ({ran / (args.kills * one):.2f}x the "
            f"{args.kills} clean runs they stand for: the work each interruption throws away, and restarts)"
        )
        print(f"    and the engine (clean references, judging, cleanups, fork server) {w1 - ran:.2f}s")
        print(f"  chaos --workers 2         {w2:7.2f}s   {w2 / clean:.2f}x  (speed-up {w1 / w2:.2f}x over 1 worker)")


if __name__ == "__main__":
    main()

"""`pipeline-runtime chaos`: the command line of the chaos engine (engine.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import MOMENTS, SIGNALS

if TYPE_CHECKING:
    from .engine import CaseResult, ChaosConfig, ChaosReport

EXIT_MISMATCH = 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "chaos",
        help="prove a pipeline resumes exactly: kill it at random moments, compare",
        description="Run a pipeline cleanly twice, then --kills times with one to three "
        "interruptions each (signals at random moments, SIGKILL at storage "
        "operations), resumed until it finishes; every finished run must match "
        "the clean run exactly. Exit 0 only when all did.",
    )
    p.add_argument("pipeline", help="registered name or module:Class")
    p.add_argument("--params", default=None, help="JSON object, or @file holding one")
    p.add_argument("--kills", type=int, default=10, help="interrupted runs (default 10)")
    p.add_argument("--seed", type=int, default=0, help="draws the interruptions (default 0)")
    p.add_argument("--signals", default=",".join(SIGNALS), help=f"some of {','.join(SIGNALS)} (default all)")
    p.add_argument(
        "--moments",
        default="both",
        choices=MOMENTS,
        help="signals at random times, SIGKILL at storage operations, or both (default)",
    )
    p.add_argument("--checkpoint-uri", default=None, help="where the runs keep checkpoints (default: a temp folder)")
    p.add_argument(
        "--compare-dir", default=None, help="a folder a param names: each run gets its own, compared byte for byte"
    )
    p.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--case", type=int, default=None, help="replay one case of this seed")
    p.add_argument(
        "--storage-counts",
        default=None,
        metavar="C,A",
        help="commits and uploads of the clean run the storage moments are drawn over (a replay "
        "command gives the session's own, so that it draws the same interruptions)",
    )
    p.add_argument("--workdir", default=None, help="keep the runs' folders here (default: a temp folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep checkpoints and folders for a look afterwards")
    p.add_argument(
        "--fresh-processes",
        action="store_true",
        help="start every attempt as a new interpreter, not forked from one that imported the "
        "pipeline (slower; for pipelines that start threads or open connections at import)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report")


def command(args: argparse.Namespace) -> int:
    from ..cli import _fail, _load_params
    from ..errors import InvalidInput
    from .engine import ChaosConfig, Session

    try:
        config = ChaosConfig(
            pipeline=args.pipeline,
            params=_load_params(args.params),
            kills=args.kills,
            seed=args.seed,
            signals=tuple(s.strip().upper().removeprefix("SIG") for s in args.signals.split(",") if s.strip()),
            moments=args.moments,
            checkpoint_uri=args.checkpoint_uri,
            compare_dir=args.compare_dir,
            workers=args.workers,
            workdir=Path(args.workdir) if args.workdir else None,
            keep=args.keep,
            case=args.case,
            fresh_processes=args.fresh_processes,
            storage_counts=_counts(args.storage_counts),
        )
        live = Live(sys.stderr, quiet=args.json)
        session = Session(config, live.case)
    except InvalidInput as e:
        return _fail(64, "InvalidInput", str(e))
    live.start(config, session)
    report = session.run()
    live.end()
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(render(report))
    return 0 if report.ok else EXIT_MISMATCH


def _counts(raw: str | None) -> tuple[int, int] | None:
    from ..errors import InvalidInput

    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InvalidInput(f"--storage-counts {raw!r}: give two numbers, commits,uploads (e.g. 12,40)")
    return int(parts[0]), int(parts[1])


class Live:
    """One line per finished case; on a terminal, a status line under them."""

    def __init__(self, out: TextIO, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.total = 0
        self.done = 0
        self.failed = 0

    def start(self, config: ChaosConfig, session: Any) -> None:
        self.total = 1 if config.case is not None else config.kills
        if not self.quiet:
            print(
                f"chaos: {config.pipeline}, {self.total} interrupted runs, seed {config.seed}, "
                f"{config.workers} at once; two clean runs first",
                file=self.out,
                flush=True,
            )

    def case(self, case: CaseResult, report: ChaosReport) -> None:
        self.done += 1
        self.failed += not case.ok
        if self.quiet:
            return
        if self.tty:
            print("\r\033[K", end="", file=self.out)
        print(case_line(case), file=self.out, flush=True)
        if self.tty:
            print(f"  {self.done}/{self.total} runs, {self.failed} failed", end="", file=self.out, flush=True)

    def end(self) -> None:
        if self.tty and not self.quiet:
            print("\r\033[K", end="", file=self.out, flush=True)


def case_line(case: CaseResult) -> str:
    steps = []
    for a in case.attempts:
        if a.interruption is None:
            steps.append(f"a{a.number} ran to the end ({a.exit_code})")
            continue
        where = f" in {a.in_step}" if a.in_step else ""
        first = " (finished first)" if a.finished_first else f" → {a.exit_code}"
        resumed = f", resumed from {a.resumed_from}" if a.resumed_from else ""
        steps.append(f"a{a.number} {a.interruption}{where}{first}{resumed}, {a.steps_committed} committed")
    if case.cleanup:
        steps.append(f"cleanup {case.cleanup}")
    verdict = "ok" if case.ok else "DIFFERS"
    return f"  case {case.index:<3} {verdict:<8} {case.seconds:6.1f}s  " + "; ".join(steps)


def render(report: ChaosReport) -> str:
    lines = []
    if report.reference_error:
        return f"chaos: {report.pipeline}: {report.reference_error}\nnothing was interrupted: fix the clean run first"
    interrupted = sum(1 for c in report.cases for a in c.attempts if a.interruption and not a.finished_first)
    lines.append(
        f"chaos: {report.pipeline}, seed {report.seed}: {len(report.cases)} runs, {interrupted} "
        f"interruptions, {len(report.failed)} differ; clean run {report.clean_seconds:.1f}s, "
        f"session {report.seconds:.1f}s"
    )
    table = [
        ("runs", len(report.cases)),
        ("interruptions", interrupted),
        ("matched the clean run", sum(c.ok for c in report.cases)),
        ("differ", len(report.failed)),
        ("attempts", sum(len(c.attempts) for c in report.cases)),
        ("cleanups interrupted", sum(1 for c in report.cases if c.cleanup)),
    ]
    lines += [f"  {name:<24} {value}" for name, value in table]
    for finding in report.nondeterministic:
        lines.append(f"not deterministic: {finding.message}")
    if report.nondeterministic:
        lines.append("  (those values were left out of the comparison; resume was checked for the rest)")
    for case in report.failed:
        lines.append(f"case {case.index} ({'; '.join(case.plan)}):")
        lines += [f"    {d.line()}" for d in case.differences[:5]]
        if len(case.differences) > 5:
            lines.append(f"    ... {len(case.differences) - 5} more")
        lines.append(f"    replay: {report.replay} --case {case.index}")
    lines.append(
        "resumable: every interrupted run ended exactly as a clean run" if report.ok else "NOT proven resumable"
    )
    return "\n".join(lines)

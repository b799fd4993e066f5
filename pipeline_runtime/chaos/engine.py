"""Kill a pipeline at seeded moments, resume it until it finishes, compare with clean runs.

One engine serves `pipeline-runtime chaos`, `pipeline_runtime.testing.assert_resumable`
and the fault suite. Every attempt is a real `pipeline-runtime` process (through
child.py, whose store can stop at a storage operation), killed by a real signal.

A session: two clean runs (what a step writes differently between them is named as
non-determinism, and left out of the comparison), then `kills` cases. Each case is
interrupted one to three times, at a moment drawn from its seed: a signal at a random
point of a clean run's time, or a SIGKILL at a storage operation (before an artifact
upload, before a commit, during cleanup); then it is resumed, attempt after attempt,
until it exits 0. The finished case must have the clean run's context and files, and
a history in which no committed step ran again and nothing committed was lost.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, RespawnError
from . import MOMENTS, SIGNALS, judge
from .forkserver import ForkServer
from .interrupt import finish, interrupt, pause_env, signal_number
from .store import ENV_STATS

EXPECTED_EXIT = {
    # -15/-2: the signal came while the interpreter was starting, before the handler.
    "KILL": {-signal.SIGKILL},
    "TERM": {143, -signal.SIGTERM},
    "INT": {130, -signal.SIGINT},
}
TRANSIENT_EXIT = 75
PROGRESS_INTERVAL = "0.25"
"""Seconds between progress commits in chaos attempts, so that a kill inside a long step
finds progress to resume from (a step shorter than this restarts: that path is tested
too). At 0.05 s the progress commits alone made dataprep's reference run 25% slower."""
MAX_EXTRA_ATTEMPTS = 3
NO_INDEX = 1 << 62
"""Start index of a step start seen in a log (the regression check needs a pipeline's own index)."""


@dataclass
class ChaosConfig:
    """What to test. `pipeline`: a registered name or `module:Class`."""

    pipeline: str
    params: dict[str, Any] = field(default_factory=dict)
    kills: int = 10
    seed: int = 0
    signals: tuple[str, ...] = SIGNALS
    moments: str = "both"
    """"time" (signals at random moments), "storage" (SIGKILL at storage operations), or both."""
    checkpoint_uri: str | None = None
    """Where the cases keep their checkpoints; default: file:// under `workdir`."""
    compare_dir: str | None = None
    """A folder a param names: each case gets its own, compared file by file."""
    workers: int = 1
    workdir: Path | None = None
    keep: bool = False
    case: int | None = None
    """Run only this case (a replay)."""
    attempt_timeout: float | None = None
    fresh_processes: bool = False
    """Start every attempt as a new interpreter instead of forking one that has imported
    the pipeline (slower; see forkserver.py for what a fork shares)."""
    storage_counts: tuple[int, int] | None = None
    """(commits, artifact uploads) of the clean run the storage moments are drawn over. A
    clean run's counts vary with timing (progress commits), so a replay passes the
    session's own (`--storage-counts C,A`) to draw exactly the same plans."""


@dataclass(frozen=True)
class Interruption:
    kind: str
    """KILL | TERM | INT (at `fraction` of a clean run's time), or a storage moment:
    artifact-before | commit-before | delete-before (the Nth such operation of the attempt)."""
    n: int = 0
    fraction: float = 0.0

    def label(self, clean_seconds: float) -> str:
        if self.kind in SIGNALS:
            return f"SIG{self.kind}@{self.fraction * clean_seconds:.2f}s"
        return f"SIGKILL {self.kind.replace('-', ' ')} #{self.n}"


@dataclass
class Attempt:
    number: int
    interruption: str | None
    exit_code: int
    seconds: float
    finished_first: bool = False
    in_step: str | None = None
    steps_committed: int = 0
    resumed_from: str | None = None
    ran: list[str] = field(default_factory=list)
    ready: bool = False
    """The runtime said it handles signals; before that, a signal ends the interpreter's start."""
    reason: str | None = None
    message: str | None = None


@dataclass
class Difference:
    where: str
    """context | file | history | exit | cleanup"""
    key: str
    step: str | None
    what: str
    hint: str | None = None

    def line(self) -> str:
        step = f" (written by step `{self.step}`)" if self.step else ""
        return f"{self.where} `{self.key}`{step}: {self.what}" + (f"\n      hint: {self.hint}" if self.hint else "")


@dataclass
class CaseResult:
    index: int
    plan: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    cleanup: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences


@dataclass
class Finding:
    """A step whose outputs differ between two clean runs."""

    key: str
    step: str | None
    where: str
    message: str


@dataclass
class ChaosReport:
    pipeline: str
    seed: int
    kills: int
    clean_seconds: float = 0.0
    seconds: float = 0.0
    reference_error: str | None = None
    nondeterministic: list[Finding] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    replay: str = ""

    @property
    def ok(self) -> bool:
        return self.reference_error is None and not self.nondeterministic and all(c.ok for c in self.cases)

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.ok]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        for case, raw in zip(self.cases, out["cases"]):
            raw["ok"] = case.ok
            if not case.ok:
                raw["replay"] = f"{self.replay} --case {case.index}"
        return out


@dataclass
class _Reference:
    seconds: float
    context: list[tuple[str, Any]]
    files: dict[str, tuple[str, int, float]]
    counts: dict[str, int]
    writers: dict[str, list[str]]
    windows: list[tuple[str, float, float]]


Judging = Callable[[], None] | None
"""What judges a finished case (None: it failed before it finished)."""


class ChaosError(RespawnError):
    """The session could not be run (not a finding about the pipeline)."""


def check(config: ChaosConfig) -> type[Any]:
    """Refuse bad input before anything runs; the pipeline class."""
    from ..registry import resolve

    if config.kills < 1:
        raise InvalidInput(f"kills: {config.kills} - give at least 1")
    if config.workers < 1:
        raise InvalidInput(f"workers: {config.workers} - give at least 1")
    unknown = [s for s in config.signals if s not in SIGNALS]
    if unknown or (not config.signals and config.moments != "storage"):
        raise InvalidInput(f"signals: {','.join(config.signals) or 'none'} - give some of {','.join(SIGNALS)}")
    if config.moments not in MOMENTS:
        raise InvalidInput(f"moments: {config.moments!r} is not one of {', '.join(MOMENTS)}")
    if config.storage_counts is not None and min(config.storage_counts) < 0:
        raise InvalidInput(f"storage counts: {config.storage_counts} - give two numbers, 0 or more")
    if config.case is not None and not 0 <= config.case < config.kills:
        raise InvalidInput(f"case: {config.case} - cases are numbered 0 to {config.kills - 1}")
    cls = resolve(config.pipeline)
    cls(config.params).validate_params({})
    if config.compare_dir is not None:
        folder = Path(_local_path(config.compare_dir))
        probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("/"))
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise InvalidInput(
                f"compare-dir: {config.compare_dir} is not a writable folder "
                f"({probe} is {'not writable' if probe.is_dir() else 'not a folder'})"
            )
        if not _mentions(config.params, config.compare_dir):
            raise InvalidInput(
                f"compare-dir: no param names {config.compare_dir}, so every case would write the same "
                "files; give the folder a param writes to (e.g. output_uri)"
            )
    return cls


def _local_path(text: str) -> str:
    return os.path.abspath(text.removeprefix("file://"))


def _mentions(params: Any, folder: str) -> bool:
    return bool(_substitute(params, folder, "/x") != params)


def _substitute(params: Any, folder: str, replacement: str) -> Any:
    """`params` with every string that names `folder` (or a path in it) pointing into
    `replacement` instead."""
    base = _local_path(folder).rstrip("/")

    def one(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        if isinstance(value, list):
            return [one(v) for v in value]
        if not isinstance(value, str) or not value or ("://" in value and not value.startswith("file://")):
            return value
        scheme = "file://" if value.startswith("file://") else ""
        path = _local_path(value)
        if path == base or path.startswith(base + "/"):
            return scheme + replacement + path[len(base) :]
        return value

    return one(params)


class Session:
    """One chaos session; `run()` returns its report."""

    def __init__(self, config: ChaosConfig, on_case: Callable[[CaseResult, ChaosReport], None] | None = None) -> None:
        self.cfg = config
        self.cls = check(config)
        self.target = config.pipeline
        self.on_case = on_case or (lambda case, report: None)
        self._own_workdir = config.workdir is None
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="respawn-chaos-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.session = f"chaos-{config.seed}-{uuid.uuid4().hex[:6]}"
        self.uri = config.checkpoint_uri or f"file://{self.workdir / 'checkpoints'}"
        self.tenant = "chaos"
        self.run_ids: list[str] = []
        self._lock = threading.Lock()
        self.env = self._env()
        self.forks: ForkServer | None = None
        """Started with the session unless `fresh_processes`; it imports the pipeline while the
        first clean run (always a fresh process) runs, and starts every later attempt."""

    # -- processes ---------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
        own = [p for p in sys.path if p and not p.startswith((sys.prefix, sys.base_prefix))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([os.getcwd(), *own]))
        return env

    def _argv(self, command: str, run_id: str, attempt: int, params: Any) -> list[str]:
        base = [sys.executable, "-m", "pipeline_runtime.chaos.child", command]
        if command == "cleanup":
            return [*base, self.uri, "--run-id", run_id, "--tenant", self.tenant]
        return [
            *base,
            self.target,
            "--params",
            json.dumps(params),
            "--run-id",
            run_id,
            "--checkpoint-uri",
            self.uri,
            "--attempt",
            str(attempt),
            "--retain",
            "Always",
            "--tenant",
            self.tenant,
            "--progress-interval",
            PROGRESS_INTERVAL,
        ]

    def _timeout(self, clean: float) -> float:
        return self.cfg.attempt_timeout or max(120.0, 20 * clean)

    def _start(
        self, folder: Path, tag: str, argv: list[str], extra: dict[str, str], fresh: bool = False
    ) -> tuple[Any, Path, Path]:
        """A fresh process (when asked, or without a fork server), or one forked by the server."""
        log, term = folder / f"{tag}.log", folder / f"{tag}.termination"
        extra = {**extra, "RESPAWN_TERMINATION_LOG": str(term)}
        if self.forks is not None and not fresh:
            # The child opens its log after the fork; a signal that comes sooner (an early moment
            # of a short pipeline) ends it before that: an empty log, not a missing one.
            log.touch()
            return self.forks.spawn(argv[3:], extra, str(log)), log, term
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return proc, log, term

    def attempt(
        self,
        folder: Path,
        run_id: str,
        number: int,
        params: Any,
        what: Interruption | None,
        clean: float,
        command: str = "run",
        fresh: bool = False,
    ) -> Attempt:
        """Start one attempt, interrupt it as planned (or let it finish); what happened."""
        tag = f"{command}-{number}"
        marker = folder / f"{tag}.paused"
        extra: dict[str, str] = {}
        if what is not None and what.kind not in SIGNALS:
            extra = pause_env(what.kind, what.n, marker)
        if command == "run" and number == 1:
            extra[ENV_STATS] = str(folder / "stats.json")
        started = time.monotonic()
        proc, log, term = self._start(folder, tag, self._argv(command, run_id, number, params), extra, fresh)
        limit = self._timeout(clean)
        sent = False
        if what is None:
            code = finish(proc, limit)
        elif what.kind in SIGNALS:
            code, sent = interrupt(proc, what.fraction * clean, signal_number(what.kind), limit)
        else:
            code, sent = interrupt(proc, marker.exists, signal.SIGKILL, limit)
        seconds = time.monotonic() - started
        found = Attempt(
            number, what.label(clean) if what else None, code, seconds, finished_first=what is not None and not sent
        )
        self._read_log(log, found)
        self._read_termination(term, found)
        if what is None and code == -signal.SIGKILL and not sent:
            found.reason, found.message = "Timeout", f"still running after {limit:.0f}s; killed"
        return found

    @staticmethod
    def _read_log(log: Path, into: Attempt) -> None:
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            if not line.startswith('{"event"'):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            name = event.get("event")
            into.ready = into.ready or name == "ready"
            if name == "start" and event.get("resumed_from"):
                src = event["resumed_from"]
                into.resumed_from = (
                    f"commit #{src.get('seq')} ({src.get('step') or 'no step done'})"
                    if isinstance(src, dict)
                    else str(src)
                )
            elif name == "step_start":
                into.in_step = event.get("step")
                into.ran.append(str(event.get("step")))
            elif name == "step_done":
                into.in_step = None
            elif name == "commit" and event.get("kind") == "step":
                into.steps_committed += 1

    @staticmethod
    def _read_termination(term: Path, into: Attempt) -> None:
        try:
            record = json.loads(term.read_text())
        except (OSError, ValueError):
            return
        if isinstance(record, dict) and record.get("exitCode") not in (None, 0):
            into.reason, into.message = record.get("reason"), str(record.get("message"))[:500]

    # -- clean runs -------------------------------------------------------------------
    def _clean_run(self, name: str, fresh: bool = False) -> tuple[_Reference | None, Attempt, Path]:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        run_id = self._run_id(name)
        params = self._params(folder)
        done = self.attempt(folder, run_id, 1, params, None, clean=30.0, fresh=fresh)
        if done.exit_code != 0:
            return None, done, folder
        history = judge.history(self.uri, run_id, self.tenant)
        stats = json.loads((folder / "stats.json").read_text()) if (folder / "stats.json").exists() else {}
        ref = _Reference(
            done.seconds,
            self._context(run_id, folder),
            judge.file_digests(folder / "out"),
            stats,
            judge.writers(history),
            judge.step_windows(history),
        )
        return ref, done, folder

    def _context(self, run_id: str, folder: Path) -> list[tuple[str, Any]]:
        """The run's final context described, with its own run id and folder written as
        placeholders: those differ between runs by design, not by resume."""
        own = [(str(folder / "out"), "<compare-dir>"), (run_id, "<run-id>")]

        def placeholders(node: Any) -> Any:
            if isinstance(node, str):
                for text, placeholder in own:
                    node = node.replace(text, placeholder)
                return node
            if isinstance(node, list):
                return [placeholders(n) for n in node]
            if isinstance(node, dict):
                return {k: placeholders(v) for k, v in node.items()}
            return node

        return [
            (key, placeholders(tree))
            for key, tree in judge.describe_context(judge.final_context(self.uri, run_id, self.tenant))
        ]

    def _run_id(self, name: str) -> str:
        run_id = f"{self.session}-{name}"
        with self._lock:
            self.run_ids.append(run_id)
        return run_id

    def _params(self, folder: Path) -> Any:
        if self.cfg.compare_dir is None:
            return self.cfg.params
        (folder / "out").mkdir(parents=True, exist_ok=True)  # as the user's own folder would be there
        return _substitute(self.cfg.params, self.cfg.compare_dir, str(folder / "out"))

    def _nondeterminism(self, a: _Reference, b: _Reference) -> list[Finding]:
        found = []
        want, got = dict(a.context), dict(b.context)
        for key, mine in want.items():
            if key in got and mine != got[key]:
                step = _last_writer(a, key)
                who = f"step `{step}` writes `{key}`" if step else f"`{key}`"
                found.append(
                    Finding(
                        key,
                        step,
                        "context",
                        f"{who} differently on every run ({_differs(mine, got[key])}): "
                        "seed its randomness, and do not read the clock or the environment into ctx",
                    )
                )
        for path, (digest, _, mtime) in a.files.items():
            other = b.files.get(path)
            if other is not None and other[0] != digest:
                writer = judge.file_writer(mtime, a.windows)
                who = f"step `{writer}` writes {path}" if writer else path
                found.append(Finding(path, writer, "file", f"{who} differently on every run: seed its randomness"))
        return found

    # -- cases ---------------------------------------------------------------------
    def use_storage_counts(self, ref: _Reference, other: _Reference) -> None:
        """Draw storage moments over the operations both clean runs reached: a run makes more
        progress commits (and so more uploads) when it runs slower, and the first one shares the
        machine with the fork server's imports; a moment only it reached would never come in a
        case. A replay (`storage_counts` given) draws over the session's counts instead."""
        if self.cfg.storage_counts is not None:
            commits, artifacts = self.cfg.storage_counts
        else:
            commits, artifacts = (min(ref.counts.get(k, 0), other.counts.get(k, 0)) for k in ("commit", "artifact"))
        ref.counts = {**ref.counts, "commit": commits, "artifact": artifacts}

    def plans(self, ref: _Reference) -> list[list[Interruption]]:
        """The interruptions of every case, from the seed and a clean run's counts."""
        cfg = self.cfg
        commits, artifacts = ref.counts.get("commit", 0), ref.counts.get("artifact", 0)
        storage = [Interruption("commit-before", n) for n in range(2, commits + 1)] + [
            Interruption("artifact-before", n) for n in range(1, artifacts + 1)
        ]
        random.Random(f"{cfg.seed}:sweep").shuffle(storage)
        use_time, use_storage = cfg.moments in ("time", "both"), cfg.moments in ("storage", "both") and storage
        plans = []
        for i in range(cfg.kills):
            rng = random.Random(f"{cfg.seed}:{i}")
            plan = []
            for j in range(rng.choice([1, 1, 2, 3])):
                at_storage = use_storage and (not use_time or (i % 2 == 0 if j == 0 else rng.random() < 0.4))
                if at_storage and j == 0:  # first interruptions sweep every storage moment in turn
                    plan.append(storage[(i // (2 if use_time else 1)) % len(storage)])
                elif at_storage:
                    plan.append(rng.choice(storage))
                else:
                    plan.append(Interruption(rng.choice(list(cfg.signals)), fraction=round(rng.uniform(0.02, 0.95), 3)))
            plans.append(plan)
        return plans

    def case(self, index: int, plan: list[Interruption], ref: _Reference, skip: set[str]) -> tuple[CaseResult, Judging]:
        """Run one case's attempts. A case that finished comes back with what judges it, which
        `run()` calls on a judge thread while the next case runs: reading back its context,
        history and files (0.15 s a case of dataprep output, read from disk), the cleanup check."""
        started = time.monotonic()
        folder = self.workdir / f"case-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        run_id = self._run_id(f"c{index}")
        params = self._params(folder)
        result = CaseResult(index, [p.label(ref.seconds) for p in plan])
        number = 1
        for what in plan:
            got = self.attempt(folder, run_id, number, params, what, ref.seconds)
            result.attempts.append(got)
            number += 1
            if got.finished_first or got.exit_code == 0:
                if got.exit_code != 0:
                    result.differences.append(self._failed_attempt(got))
                    return self._done(result, started), None
                break
            # 0: it finished as the signal came (a decided outcome holds signals); 75: storage was away.
            expected = EXPECTED_EXIT.get(what.kind, {-signal.SIGKILL}) | {0, TRANSIENT_EXIT}
            if got.exit_code not in expected and got.ready:
                result.differences.append(
                    Difference(
                        "exit",
                        f"attempt {got.number}",
                        got.in_step,
                        f"answered {got.interruption} with exit {got.exit_code}"
                        + (f" ({got.reason}: {got.message})" if got.reason else ""),
                    )
                )
                return self._done(result, started), None
        last = result.attempts[-1]
        while last.exit_code != 0:
            if number > len(plan) + MAX_EXTRA_ATTEMPTS or (
                last.interruption is None and last.exit_code != TRANSIENT_EXIT
            ):
                result.differences.append(self._failed_attempt(last))
                return self._done(result, started), None
            last = self.attempt(folder, run_id, number, params, None, ref.seconds)
            result.attempts.append(last)
            number += 1

        def judging() -> None:
            self._compare(result, folder, run_id, ref, skip)
            if result.ok and index % 3 == 2:
                self._interrupt_cleanup(result, folder, run_id, ref, number, params)
            if self._own_workdir and not self.cfg.keep:  # judged: free its outputs' disk now
                shutil.rmtree(folder / "out", ignore_errors=True)

        return self._done(result, started), judging

    def _verdict(self, result: CaseResult, judging: Judging, report: ChaosReport) -> None:
        """Judge a case (unless it failed before it finished), then report it."""
        if judging is not None:
            judging()
        with self._lock:
            report.cases.append(result)
            self.on_case(result, report)

    def _done(self, result: CaseResult, started: float) -> CaseResult:
        result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _failed_attempt(got: Attempt) -> Difference:
        what = f"exited {got.exit_code}" + (f": {got.reason}: {got.message}" if got.reason else "")
        hint = None
        if got.resumed_from and got.reason == "StepFailed":
            hint = (
                f"it failed only after resuming from {got.resumed_from}: step `{got.in_step}` reads state that "
                "a skipped step kept outside ctx (a module global, an attribute of self)"
            )
        return Difference("exit", f"attempt {got.number}", got.in_step, what, hint)

    def _compare(self, result: CaseResult, folder: Path, run_id: str, ref: _Reference, skip: set[str]) -> None:
        try:
            context = self._context(run_id, folder)
        except Exception as e:  # noqa: BLE001 - a checkpoint that cannot be read back is a finding
            result.differences.append(Difference("context", "*", None, f"cannot be read back: {type(e).__name__}: {e}"))
            context = []
        want = [(k, d) for k, d in ref.context if k not in skip]
        got = [(k, d) for k, d in context if k not in skip]
        wanted, gotten = dict(want), dict(got)
        for key, desc in want:
            step = _last_writer(ref, key)
            if key not in gotten:
                result.differences.append(
                    Difference("context", key, step, "missing after resume", self._hint(step, result))
                )
            elif gotten[key] != desc:
                result.differences.append(
                    Difference("context", key, step, _differs(desc, gotten[key]), self._hint(step, result))
                )
        for key, _ in got:
            if key not in wanted:
                result.differences.append(Difference("context", key, None, "not in a clean run's context"))
        if context and [k for k, _ in want] != [k for k, _ in got if k in wanted] and not result.differences:
            result.differences.append(
                Difference("context", "key order", None, f"{[k for k, _ in got]} instead of {[k for k, _ in want]}")
            )
        if self.cfg.compare_dir is not None:
            files = judge.file_digests(folder / "out")
            for path, (digest, size, mtime) in ref.files.items():
                if path in skip:
                    continue
                writer = judge.file_writer(mtime, ref.windows)
                mine = files.get(path)
                if mine is None:
                    result.differences.append(Difference("file", path, writer, "missing after resume"))
                elif mine[0] != digest:
                    result.differences.append(
                        Difference(
                            "file",
                            path,
                            writer,
                            f"{mine[1]} bytes where a clean run wrote {size}, other contents",
                            self._file_hint(writer, result),
                        )
                    )
            for path in sorted(set(files) - set(ref.files)):
                result.differences.append(Difference("file", path, None, "not written by a clean run"))
        history = judge.history(self.uri, run_id, self.tenant)
        executions = [(s, a.number, NO_INDEX) for a in result.attempts for s in a.ran]
        verdict = judge.judge_history(history, executions)
        for problem in verdict.problems:
            result.differences.append(Difference("history", "commits", None, problem))

    @staticmethod
    def _runs_of(step: str, result: CaseResult) -> list[int]:
        return [a.number for a in result.attempts if step in a.ran]

    def _hint(self, step: str | None, result: CaseResult) -> str | None:
        if step is None:
            return None
        resumed = [a for a in result.attempts if a.resumed_from and step in a.ran]
        if resumed:
            return (
                f"step `{step}` gave another value after resuming from {resumed[0].resumed_from}: it reads state "
                "that a skipped step kept outside ctx (a module global, an attribute of self), or keeps partial "
                "work outside its saved progress; keep everything a later step needs in ctx"
            )
        return None

    def _file_hint(self, step: str | None, result: CaseResult) -> str | None:
        if step is None:
            return None
        runs = self._runs_of(step, result)
        if len(runs) > 1:
            return (
                f"step `{step}` ran in attempts {', '.join(map(str, runs))} and its file differs: its effect outside "
                "ctx is not idempotent (it appends, or adds a new file each time): write the whole file each time "
                "(to a temporary name, then rename) and declare @step(overlap=False)"
            )
        return None

    def _interrupt_cleanup(
        self, result: CaseResult, folder: Path, run_id: str, ref: _Reference, number: int, params: Any
    ) -> None:
        """Kill `cleanup` halfway, run it again, then start one more attempt: the run must
        end retired, with no artifact left, and the late attempt must have nothing to do."""
        from ..checkpoint import Kind, RunLog
        from ..storage import open_store

        n = random.Random(f"{self.cfg.seed}:{result.index}:cleanup").randint(1, max(1, ref.counts.get("artifact", 0)))
        what = Interruption("delete-before", n)
        cut = self.attempt(folder, run_id, number, params, what, ref.seconds, command="cleanup")
        again = self.attempt(folder, run_id, number + 1, params, None, ref.seconds, command="cleanup")
        result.cleanup = f"{what.label(ref.seconds)}{' (finished first)' if cut.finished_first else ''}"
        runlog = RunLog(open_store(self.uri), self.tenant, run_id)
        latest = runlog.latest()
        left = runlog.store.list(f"{runlog.prefix}artifacts/")
        late = self.attempt(folder, run_id, number + 2, params, None, ref.seconds)
        problems = []
        if again.exit_code != 0:
            problems.append(f"cleanup after an interrupted cleanup exited {again.exit_code}: {again.message}")
        if latest is None or latest.body is None or latest.body.kind is not Kind.TOMBSTONE:
            problems.append("the run is not retired (no tombstone is its newest commit)")
        if left:
            problems.append(f"{len(left)} artifacts left after cleanup")
        if late.exit_code != 0 or late.ran:
            problems.append(f"an attempt after cleanup exited {late.exit_code} and ran {late.ran or 'nothing'}")
        for problem in problems:
            result.differences.append(Difference("cleanup", "retire", None, problem))

    # -- the session -------------------------------------------------------------
    def run(self) -> ChaosReport:
        cfg = self.cfg
        started = time.monotonic()
        report = ChaosReport(self.target, cfg.seed, cfg.kills, replay=self.replay_command())
        try:
            if not cfg.fresh_processes:
                self.forks = ForkServer(self.target, self.env)
            first, done, _ = self._clean_run("clean-1", fresh=True)
            if first is None:
                report.reference_error = self._clean_failure(done)
                return report
            # Interruptions are timed on the second clean run: it must not include the
            # server's imports, or every "fraction of a run" would land too late.
            if self.forks is not None and not self.forks.wait_ready(self._timeout(first.seconds)):
                report.reference_error = "the chaos fork server did not start (its output is above)"
                return report
            second, done, _ = self._clean_run("clean-2")
            if second is None:
                report.reference_error = "the second " + self._clean_failure(done)[4:]
                return report
            report.clean_seconds = first.seconds
            first.seconds = second.seconds  # interruptions are timed on attempts started like the cases
            report.nondeterministic = self._nondeterminism(first, second)
            skip = {f.key for f in report.nondeterministic}
            self.use_storage_counts(first, second)
            report.replay = self.replay_command(first.counts)
            plans = self.plans(first)
            indexes = [cfg.case] if cfg.case is not None else list(range(cfg.kills))

            verdicts: list[Future[None]] = []

            def one(i: int) -> None:
                result, judging = self.case(i, plans[i], first, skip)
                verdicts.append(judges.submit(self._verdict, result, judging, report))

            with ThreadPoolExecutor(cfg.workers, thread_name_prefix="chaos-judge") as judges:
                with ThreadPoolExecutor(cfg.workers, thread_name_prefix="chaos") as pool:
                    list(pool.map(one, indexes))
                for verdict in verdicts:
                    verdict.result()
            report.cases.sort(key=lambda c: c.index)
            return report
        finally:
            report.seconds = time.monotonic() - started
            self.close()

    @staticmethod
    def _clean_failure(done: Attempt) -> str:
        where = f" in step `{done.in_step}`" if done.in_step else ""
        text = f"the clean run failed{where}: exit {done.exit_code}"
        if done.reason:
            text += f" ({done.reason}: {done.message})"
        if done.message and "read-only" in done.message:
            text += "; a step changes a committed array in place: copy it first (arr = arr.copy())"
        return text

    def replay_command(self, counts: dict[str, int] | None = None) -> str:
        """The command that runs this session again; with the clean run's `counts`, one whose
        storage moments are drawn exactly as this session's were."""
        cfg = self.cfg
        parts = [
            "pipeline-runtime",
            "chaos",
            cfg.pipeline,
            "--params",
            _quote(json.dumps(cfg.params)),
            "--kills",
            str(cfg.kills),
            "--seed",
            str(cfg.seed),
        ]
        if tuple(cfg.signals) != SIGNALS:
            parts += ["--signals", ",".join(cfg.signals)]
        if cfg.moments != "both":
            parts += ["--moments", cfg.moments]
        if cfg.compare_dir:
            parts += ["--compare-dir", cfg.compare_dir]
        if cfg.checkpoint_uri:
            parts += ["--checkpoint-uri", cfg.checkpoint_uri]
        if counts is not None and cfg.moments != "time":
            parts += ["--storage-counts", f"{counts.get('commit', 0)},{counts.get('artifact', 0)}"]
        return " ".join(parts)

    def close(self) -> None:
        if self.forks is not None:
            self.forks.close()
            self.forks = None
        if self.cfg.keep:
            return
        if self._own_workdir and self.cfg.checkpoint_uri is None:
            shutil.rmtree(self.workdir, ignore_errors=True)  # the checkpoints are in it: one removal
            return
        from ..checkpoint import RunLog
        from ..storage import open_store

        try:
            store = open_store(self.uri)
            for run_id in self.run_ids:
                RunLog(store, self.tenant, run_id).purge()
        except Exception:  # noqa: BLE001, S110 - best effort: the work folder goes anyway
            pass
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _last_writer(ref: _Reference, key: str) -> str | None:
    steps = ref.writers.get(key)
    return steps[-1] if steps else None


def _differs(want: Any, got: Any) -> str:
    found = judge.first_difference(want, got)
    if found is None:
        return "equal"
    where, what = found
    return f"{where}: {what}" if where else what


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def run_chaos(config: ChaosConfig, on_case: Callable[[CaseResult, ChaosReport], None] | None = None) -> ChaosReport:
    """Run a chaos session (see the module docstring)."""
    return Session(config, on_case).run()

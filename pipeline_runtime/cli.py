"""`pipeline-runtime`: run a pipeline, inspect or clean up a checkpoint.

The SIGTERM and SIGINT handlers are installed on the first line of `main`, before
the slow imports (numpy, pydantic, the pipeline's own modules), so a pod stopped at
any moment exits 143 (130 after Ctrl-C); once the outcome is decided, signals are
held, so a run whose final commit landed exits 0 whenever a signal comes. When
stderr is not a terminal the first line is `{"event": "ready", ...}`: from then on
a signal is handled (tests wait for it instead of sleeping).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import contracts as c
from .extras import missing_package_message
from .lifecycle import STOP


def main(argv: list[str] | None = None, wrap_store: Any = None) -> None:
    """`wrap_store(store) -> store`, if given, wraps the checkpoint store of `run` and
    `cleanup` (the chaos engine's child process stops at storage operations with it). The
    store is durable unless the process said otherwise (storage.set_durable_default; the
    chaos child does)."""
    STOP.install()
    args, extra = _parser().parse_known_args(argv)
    if extra:  # a bad flag after `run`: say it with `run`'s usage, not the top-level one
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.wrap_store = wrap_store
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.func is cmd_run and not sys.stderr.isatty():
        print(json.dumps({"event": "ready", "pid": os.getpid()}), file=sys.stderr, flush=True)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `inspect ... | head`: the reader had what it wanted. Point stdout at /dev/null so the
        # interpreter's final flush cannot raise again, and end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except ModuleNotFoundError as e:  # `params`, `inspect`, ... where a package of an extra is missing
        code = _missing_package(e, args.command_parser.prog)
    STOP.hold()
    sys.exit(code)


def _env_default(env: str, default: Any = None) -> Any:
    return os.environ.get(env, default)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool_env(env: str, default: bool) -> bool | str:
    """The env twin of a switch; an unknown word stays a str for _check_run_args to refuse."""
    value = os.environ.get(env)
    if value is None or value == "":
        return default
    word = value.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else value


class _Parser(argparse.ArgumentParser):
    """Usage errors are invalid configuration: exit 64 with a termination message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.exit(_fail(c.ExitCode.INVALID_INPUT, "InvalidInput", message))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pipeline-runtime", description="Run a pipeline, inspect or clean up a checkpoint.")
    sub = p.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a pipeline (every flag has a RESPAWN_* twin)")
    run.add_argument(
        "pipeline",
        nargs="?",
        default=_env_default(c.ENV_PIPELINE),
        help="registered name or module:Class [RESPAWN_PIPELINE]",
    )
    run.add_argument(
        "--params", default=_env_default(c.ENV_PARAMS), help="JSON object, or @file holding one [RESPAWN_PARAMS]"
    )
    run.add_argument(
        "--run-id",
        default=_env_default(c.ENV_RUN_ID),
        help="default: a new random id, printed; give the same id again to resume [RESPAWN_RUN_ID]",
    )
    run.add_argument(
        "--checkpoint-uri",
        default=_env_default(c.ENV_CHECKPOINT_URI, "file://" + os.path.abspath(".respawn/checkpoints")),
        help="file:///path, gs://bucket/prefix, or 'none' (default: file://$PWD/.respawn/checkpoints) "
        "[RESPAWN_CHECKPOINT_URI]",
    )
    run.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=_bool_env(c.ENV_RESUME, True),
        help="[RESPAWN_RESUME] (default)",
    )
    run.add_argument("--no-resume", dest="resume", action="store_false", help="start over, ignoring any checkpoint")
    # Values that may come from the environment are checked in cmd_run (argparse does
    # not check defaults), so a bad RESPAWN_* value gets exit 64 like a bad flag.
    run.add_argument(
        "--resume-policy",
        default=_env_default(c.ENV_RESUME_POLICY, "Compatible"),
        help="Strict | Compatible | Restart (default Compatible) [RESPAWN_RESUME_POLICY]",
    )
    run.add_argument(
        "--attempt",
        type=int,
        default=_env_default(c.ENV_ATTEMPT),
        help="fencing token; default: one more than the last [RESPAWN_ATTEMPT]",
    )
    run.add_argument(
        "--retain",
        default=_env_default(c.ENV_RETAIN, "OnFailure"),
        help="Always | OnFailure | Never (default OnFailure) [RESPAWN_RETAIN]",
    )
    run.add_argument(
        "--tenant",
        default=_env_default(c.ENV_TENANT),
        help="the folder of runs inside the checkpoint URI (default: default) [RESPAWN_TENANT]",
    )
    run.add_argument(
        "--rerun-from",
        default=_env_default(c.ENV_RERUN_FROM) or None,
        help="discard this step and later ones, run them again [RESPAWN_RERUN_FROM]",
    )
    run.add_argument(
        "--term-deadline",
        default=_env_default(c.ENV_TERM_DEADLINE, "10"),
        help="seconds from SIGTERM to a forced exit 143 (default 10) [RESPAWN_TERM_DEADLINE_SECONDS]",
    )
    run.add_argument(
        "--progress-interval",
        default=_env_default(c.ENV_PROGRESS_INTERVAL, str(c.DEFAULT_PROGRESS_INTERVAL_SECONDS)),
        help="seconds between commits of a step's save_progress state "
        f"(default {c.DEFAULT_PROGRESS_INTERVAL_SECONDS:g}) [{c.ENV_PROGRESS_INTERVAL}]",
    )
    run.set_defaults(func=cmd_run)

    ins = sub.add_parser("inspect", help="print a run's checkpoint")
    ins.add_argument("uri")
    ins.add_argument("--run-id", required=True)
    ins.add_argument("--tenant", default="default", help="(default: default)")
    ins.add_argument("--json", action="store_true", help="one JSON object")
    ins.set_defaults(func=cmd_inspect)

    cl = sub.add_parser("cleanup", help="remove a run's checkpoint, leaving a tombstone")
    cl.add_argument("uri")
    cl.add_argument("--run-id", required=True)
    cl.add_argument("--tenant", default="default", help="(default: default)")
    cl.add_argument("--purge", action="store_true", help="remove the tombstone too")
    cl.set_defaults(func=cmd_cleanup)

    from .chaos.cli import add_parser as add_chaos

    add_chaos(sub)
    sub.choices["chaos"].set_defaults(func=cmd_chaos)

    pa = sub.add_parser("params", help="print a pipeline's params: names, types, defaults, descriptions")
    pa.add_argument("pipeline", help="registered name or module:Class")
    pa.add_argument("--json", action="store_true", help="the params' JSON schema")
    pa.set_defaults(func=cmd_params)

    ls = sub.add_parser("pipelines", help="list registered pipelines")
    ls.set_defaults(func=cmd_pipelines)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)
    return p


def _fail(code: int, reason: str, message: str, reporter: Any = None) -> int:
    from .reporting import write_termination_log

    record = (
        reporter.termination(code, reason, message)
        if reporter is not None
        else {"exitCode": code, "reason": reason, "message": message}
    )
    write_termination_log(record)
    print(f"pipeline-runtime: {reason}: {message}", file=sys.stderr)
    return code


def _missing_package(error: ModuleNotFoundError, command: str) -> int:
    """A package of an extra (or of the core) is not installed: one line, exit 64; anything else
    missing is a bug, and keeps its traceback."""
    hint = missing_package_message(error, command)
    if hint is None:
        raise error
    return _fail(c.ExitCode.INVALID_INPUT, "InvalidInput", hint)


def _load_params(raw: str | None) -> dict[str, Any]:
    from .errors import InvalidInput

    if not raw:
        return {}
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as f:
                raw = f.read()
        except OSError as e:
            raise InvalidInput(f"params: cannot read {raw[1:]}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise InvalidInput(f"params: {raw[1:]} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"params: not valid JSON ({e})") from None
    except ValueError as e:  # e.g. an int of more than 4300 digits
        raise InvalidInput(f"params: {str(e)[:200]}") from None
    except RecursionError:
        raise InvalidInput("params: nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidInput("params: must be a JSON object")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from .errors import InvalidInput, exit_code_for
    from .reporting import Reporter

    reporter = Reporter()

    def on_deadline() -> None:
        # The step never reached a safe point in time: the last commit stands.
        _fail(
            STOP.exit_code,
            "Terminated",
            f"{STOP.name} deadline ({args.term_deadline:g}s) passed inside a step; resuming from the last commit",
            reporter,
        )
        os._exit(STOP.exit_code)

    STOP.on_deadline = on_deadline
    pipeline = None
    try:
        _check_run_args(args)
        STOP.deadline_seconds = args.term_deadline
        if not args.pipeline:
            known = ", ".join(sorted(_registered())) or "none"
            raise InvalidInput(f"pipeline: none given; registered pipelines: {known}")
        from .registry import resolve

        cls = resolve(args.pipeline)
        uri = None if args.checkpoint_uri in ("", "none") else args.checkpoint_uri
        store = None
        if uri is not None and args.wrap_store is not None:
            from .storage import open_store

            try:
                store = args.wrap_store(open_store(uri))
            except ValueError as e:
                raise InvalidInput(f"checkpoint uri: {e}") from None
        try:
            attempt = int(args.attempt) if args.attempt not in (None, "") else None
        except ValueError:
            raise InvalidInput(f"attempt: {args.attempt!r} is not a number") from None
        pipeline = cls(
            _load_params(args.params),
            checkpoint_uri=uri,
            store=store,
            run_id=args.run_id,
            tenant_id=args.tenant,
            attempt=attempt,
            resume_policy=args.resume_policy,
            retain=args.retain,
            on_event=reporter,
            progress_interval=args.progress_interval,
        )
        summary = pipeline.run(resume_from_checkpoint=args.resume, rerun_from=args.rerun_from)
        message = (
            f"{len(summary.executed)} steps run, {len(summary.skipped)} skipped (resumed)"
            if summary.skipped
            else f"{len(summary.executed)} steps run"
        )
        from .reporting import write_termination_log

        if summary.skipped and not summary.executed:
            message = f"already finished: all {len(summary.skipped)} steps were done, nothing ran"
            print(
                f"pipeline-runtime: run {pipeline.run_id} {message} (to run it again: --rerun-from STEP, "
                "or a new --run-id)",
                file=sys.stderr,
            )
        write_termination_log(reporter.termination(0, "Succeeded", message))
        return 0
    except BaseException as e:
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise
        code, reason = exit_code_for(e)
        if code is c.ExitCode.TERMINATED and STOP.exit_code == c.ExitCode.INTERRUPTED:
            code = c.ExitCode.INTERRUPTED  # Ctrl-C: the same safe stop, its own code
        message = str(e) or type(e).__name__
        hint = missing_package_message(e, "pipeline-runtime run") if isinstance(e, ModuleNotFoundError) else None
        if hint is not None:  # e.g. the operator image, which has no numpy: no retry installs it
            code, reason, message = c.ExitCode.INVALID_INPUT, "InvalidInput", hint
        if reason == "StepFailed":
            import traceback

            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        ended = _fail(code, reason, message, reporter)
        if pipeline is not None and pipeline.checkpoint_uri and ended in _RESUMABLE:
            print(
                f"pipeline-runtime: to resume run {pipeline.run_id}: {_resume_command(args.argv, pipeline.run_id)}",
                file=sys.stderr,
            )
        return ended
    finally:
        reporter.close()


_RESUMABLE = (c.ExitCode.TERMINATED, c.ExitCode.INTERRUPTED, c.ExitCode.TRANSIENT_INFRA, c.ExitCode.STEP_FAILED)
"""Endings after which the same command resumes (a bad input or checkpoint needs a fix first)."""


def _resume_command(given: list[str], run_id: str) -> str:
    """This command line, with --run-id (a run started without one got a random id)."""
    import shlex

    argv = ["pipeline-runtime", *given]
    if not any(a == "--run-id" or a.startswith("--run-id=") for a in argv) and not os.environ.get(c.ENV_RUN_ID):
        argv += ["--run-id", run_id]
    return shlex.join(argv)


def _check_run_args(args: argparse.Namespace) -> None:
    """Check what argparse cannot (values from RESPAWN_* defaults); convert in place."""
    from .errors import InvalidInput, parse_seconds

    for name, enum, env in (
        ("resume_policy", c.ResumePolicy, c.ENV_RESUME_POLICY),
        ("retain", c.RetainPolicy, c.ENV_RETAIN),
    ):
        value = getattr(args, name)
        if value not in [p.value for p in enum]:
            raise InvalidInput(
                f"{name.replace('_', '-')}: {value!r} is not one of {', '.join(p.value for p in enum)} (flag or {env})"
            )
    if isinstance(args.resume, str):
        raise InvalidInput(
            f"resume: {args.resume!r} is neither true nor false ({c.ENV_RESUME}: one of {', '.join(_TRUE + _FALSE)})"
        )
    args.term_deadline = parse_seconds(
        f"term-deadline (flag or {c.ENV_TERM_DEADLINE})", args.term_deadline, low=0.0, high=86400.0
    )
    args.progress_interval = parse_seconds(
        f"progress-interval (flag or {c.ENV_PROGRESS_INTERVAL})",
        args.progress_interval,
        low=c.MIN_PROGRESS_INTERVAL_SECONDS,
        high=c.MAX_PROGRESS_INTERVAL_SECONDS,
    )


def _registered() -> dict[str, str]:
    from .registry import registered

    return registered()


def _open_log(args: argparse.Namespace) -> Any:
    from .checkpoint import RunLog
    from .storage import open_store

    wrap = getattr(args, "wrap_store", None)
    store = open_store(args.uri)
    return RunLog(wrap(store) if wrap else store, args.tenant, args.run_id)


def describe(node: Any) -> Any:
    """A stored context node as JSON a person can read (arrays as dtype/shape/size)."""
    if "json" in node:
        return node["json"]
    if "b64" in node:
        return {"type": "bytes", "size": len(node["b64"]) * 3 // 4}
    if "ref" in node:
        return {k: v for k, v in node["ref"].items()}
    if "array" in node:
        return {"type": "ndarray", "dtype": node["array"]["dtype"], "shape": node["array"]["shape"], "inline": True}
    if "list" in node or "tuple" in node:
        return [describe(n) for n in node.get("list", node.get("tuple"))]
    if "scalar" in node:
        return {"type": "scalar", "dtype": node["scalar"]["dtype"]}
    if "bytearray" in node:
        return {"type": "bytearray", "of": describe(node["bytearray"])}
    return {k: describe(n) for k, n in node["dict"].items()}


def inspect_run(runlog: Any) -> dict[str, Any]:
    """The `inspect --json` object: seed fields of the latest commit plus history."""
    from .checkpoint import Commit, Entry, Unreadable
    from .codec import referenced_artifacts

    history: list[Entry | Unreadable] = runlog.history()
    if not history:
        raise FileNotFoundError(f"no checkpoint at {runlog.uri}")
    real = [h for h in history if isinstance(h, Commit)]
    newest = real[-1] if real else None
    refs = referenced_artifacts(newest.context if newest and newest.context else {})
    return {
        "pipeline_name": newest.pipeline_name if newest else None,
        "run_guid": newest.run_guid if newest else None,
        "completed_steps": newest.completed_steps if newest else None,
        "context": describe(newest.context) if newest and newest.context else {},
        "steps_summary": newest.steps_summary if newest else None,
        "checkpoint_version": newest.checkpoint_version if newest else getattr(history[-1], "checkpoint_version", None),
        "attempt": newest.attempt if newest else None,
        "seq": (newest or history[-1]).seq,
        "kind": newest.kind.value if newest else (history[-1].kind.value if history[-1].kind else None),
        "outcome": newest.outcome if newest else None,
        "uri": runlog.uri,
        "progress": (
            {"step": newest.progress.step, "state": describe(newest.progress.state)}
            if newest and newest.progress
            else None
        ),
        "artifacts": {"count": len(refs), "bytes": sum(refs.values())},
        "history": [_history_line(h) for h in history],
    }


def _history_line(h: Any) -> dict[str, Any]:
    from .checkpoint import Commit, Kind, Unreadable

    line: dict[str, Any] = {"seq": h.seq, "attempt": None, "kind": None, "step": None, "at": None, "completed": 0}
    if isinstance(h, Unreadable):
        return {**line, "error": h.error}
    line["kind"] = h.kind.value
    if isinstance(h, Commit):
        # `step`: the last completed step, what a resume continues after (as in the runtime's
        # commit event); a progress or failed commit's own step is not done: it is `in_step`.
        done = h.completed_steps
        line.update(attempt=h.attempt, step=done[-1] if done else None, at=h.at, completed=len(done))
        if h.kind in (Kind.PROGRESS, Kind.FAILED):
            line["in_step"] = h.step
        if h.resumed_from:
            line["resumed_from"] = h.resumed_from
    return line


def _store_errors(command: str, action: Any) -> int:
    """Run `inspect`/`cleanup`; every error a user can cause is one line and an exit code, no traceback."""
    from .checkpoint import CorruptCheckpoint, Superseded
    from .storage.base import OutsideStore, StoreError, StoreMisconfigured, TransientStoreError

    code: int
    try:
        return int(action())
    except (
        ValueError,
        OutsideStore,
        StoreMisconfigured,
    ) as e:  # a bad URI, run id or tenant; a store path through a symlink
        code, reason, message = c.ExitCode.INVALID_INPUT, "InvalidInput", str(e)
    except CorruptCheckpoint as e:
        code, reason, message = c.ExitCode.INCOMPATIBLE_CHECKPOINT, "IncompatibleCheckpoint", str(e)
    except Superseded as e:
        code, reason, message = c.ExitCode.SUPERSEDED, "Superseded", str(e)
    except FileNotFoundError as e:  # no checkpoint there: nothing to show, as before
        code, reason, message = 2, "NotFound", str(e)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main() ends quietly
    except (TransientStoreError, StoreError, OSError) as e:
        code, reason, message = c.ExitCode.TRANSIENT_INFRA, "TransientInfra", f"{type(e).__name__}: {e}"
    print(f"pipeline-runtime {command}: {reason}: {message}", file=sys.stderr)
    return code


def cmd_inspect(args: argparse.Namespace) -> int:
    return _store_errors("inspect", lambda: _inspect(args))


def _inspect(args: argparse.Namespace) -> int:
    info = inspect_run(_open_log(args))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['pipeline_name']} run {info['run_guid']} at {info['uri']}")
    print(
        f"  latest: commit #{info['seq']} ({info['kind']}) by attempt {info['attempt']}"
        + (f", outcome {info['outcome']}" if info["outcome"] else "")
    )
    print(f"  completed: {', '.join(info['completed_steps'] or []) or '-'}")
    if info["progress"]:
        print(f"  in-step progress saved for {info['progress']['step']}")
    if info["kind"] == "tombstone":
        print("  retired: the artifacts are gone, the summary stays")
    else:
        print(f"  artifacts: {info['artifacts']['count']} ({info['artifacts']['bytes'] / 1e6:.1f} MB)")
    for key, value in (info["context"] or {}).items():
        print(f"    ctx[{key!r}] = {json.dumps(value, default=str)[:100]}")
    summary = info["steps_summary"] or {}
    if summary:
        print("  steps:")
        for name, row in summary.items():
            mb = (row.get("bytes_written") or 0) / 1e6
            print(
                f"    {name:<20} {row.get('status', '?'):<9} attempt {row.get('attempt')!s:<3} "
                f"{row.get('duration_s') or 0:>8.2f}s {mb:>9.1f} MB"
            )
    print("  history:")
    stubs = [h for h in info["history"] if h["kind"] == "stub"]
    if stubs:  # what retiring leaves of the older commits: one line, not one per commit
        print(f"    #{stubs[0]['seq']}..#{stubs[-1]['seq']}: {len(stubs)} older commits, retired")
    for h in info["history"]:
        if h["kind"] != "stub":
            where = f"in {h['in_step']}" if h.get("in_step") else h["step"] or ""
            print(
                f"    #{h['seq']:<5} attempt {h['attempt']!s:<3} {h['kind']!s:<9} "
                f"{where:<20} {h['at'] or ''} {h.get('error', '')}"
            )
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    return _store_errors("cleanup", lambda: _cleanup(args))


def _cleanup(args: argparse.Namespace) -> int:
    from .checkpoint import Commit, Kind, tombstone_of

    runlog = _open_log(args)
    if args.purge:
        n = runlog.purge()
        print(f"removed {n} objects under {runlog.uri}")
        return 0
    latest = runlog.latest()
    if latest is None:
        print(f"nothing at {runlog.uri}")
        return 0
    body = latest.body
    if isinstance(body, Commit) and body.kind is Kind.TOMBSTONE:
        # A cleanup killed after its tombstone left artifacts or unstubbed commits: finish it.
        runlog.sweep(latest.seq)
        print(f"{runlog.uri} is retired (tombstone at commit #{latest.seq}); leftovers removed")
        return 0
    outcome = (body.outcome if isinstance(body, Commit) else None) or "Deleted"
    seq = runlog.retire(tombstone_of(body, outcome=outcome), latest.seq)
    print(f"retired {runlog.uri}: tombstone at commit #{seq}")
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from .chaos.cli import command

    return command(args)


def cmd_params(args: argparse.Namespace) -> int:
    from .errors import InvalidInput
    from .registry import resolve

    try:
        cls = resolve(args.pipeline)
    except InvalidInput as e:
        return _fail(c.ExitCode.INVALID_INPUT, "InvalidInput", str(e))
    model = cls.Params
    if args.json:
        print(json.dumps(model.model_json_schema(), indent=2))
        return 0
    print(f"{cls.pipeline_name()} ({args.pipeline}) params:")
    if not model.model_fields:
        print("  (none)")
    for name, field in model.model_fields.items():
        ann = field.annotation
        kind = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
        default = (
            "required"
            if field.is_required()
            else f"default {json.dumps(field.get_default(call_default_factory=True), default=str)}"
        )
        doc = field.description or ""
        print(f"  {name:<20} {kind:<12} {default}" + (f"  - {doc}" if doc else ""))
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    for name, target in sorted(_registered().items()):
        print(f"{name}\t{target}")
    return 0


if __name__ == "__main__":
    main()

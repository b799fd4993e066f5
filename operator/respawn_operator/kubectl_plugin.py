"""``kubectl respawn``: look at and steer PipelineRuns from a terminal.

kubectl respawn get [RUN...] [-A]        # runs with a progress bar; fan-out parents with item counts
kubectl respawn watch RUN                # live steps, attempts and preemptions until the run ends
kubectl respawn logs RUN [--attempt N] [-f]
kubectl respawn describe RUN             # the attempts timeline: node, spot, outcome, resumed from
kubectl respawn suspend RUN / resume RUN
kubectl respawn rerun RUN --from STEP

kubectl runs any ``kubectl-respawn`` on PATH as ``kubectl respawn``; ``pip install 'respawn[operator]'``
puts it there. It talks to the API server with the user's kubeconfig (``KUBECONFIG``,
``--kubeconfig``, ``--context``) and can do only what the user's RBAC allows: every
request is one the user could make with kubectl itself. Suspend, resume and rerun are merge
patches of ``spec.suspend`` and ``spec.rerunFrom``; the operator does the rest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TextIO

from pipeline_runtime.extras import missing_package_message
from respawn_operator import GROUP, LABEL_ATTEMPT, LABEL_RUN_UID, PLURAL, VERSION
from respawn_operator.spec import PIPELINE_CONTAINER, STEP_PATTERN
from respawn_operator.timeutil import parse

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
LABEL_PARENT_UID = "respawn.dev/parent-uid"
"""On a fan-out child: its parent's uid (respawn_operator.fanout; not imported, it pulls in the reconciler)."""
BAR_WIDTH = 10
RESOURCE = f"{PLURAL}.{GROUP}"


class UserError(Exception):
    """Something the user can fix (no such run, no kubeconfig, forbidden): one line, exit 1."""


# -- talking to the API server ---------------------------------------------------------


class Client:
    """The few API calls the plugin makes, with API errors turned into :class:`UserError`."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            from kubernetes import client, config
        except ModuleNotFoundError as e:  # `pip install respawn` without [operator]
            raise UserError(missing_package_message(e, "kubectl respawn") or str(e)) from None

        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if chosen is None:
                raise UserError(f'context "{context}" is not in the kubeconfig')
            self.default_namespace: str = chosen.get("context", {}).get("namespace") or "default"
            api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            raise UserError(f"cannot load a kubeconfig: {_first_line(str(exc))}") from None
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call; HTTP errors become the server's own message, as kubectl prints it."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise UserError(_api_message(exc)) from None
        except HTTPError as exc:
            raise UserError(f"cannot reach the API server: {_first_line(str(exc))}") from None

    def run(self, namespace: str, name: str) -> Obj:
        run: Obj = self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        return run

    def runs(self, namespace: str | None) -> list[Obj]:
        if namespace is None:
            result = self.call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            result = self.call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        items: list[Obj] = result.get("items") or []
        return items

    def patch_spec(self, namespace: str, name: str, spec: Obj) -> Obj:
        patched: Obj = self.call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",  # the client would pick json-patch for a dict
        )
        return patched

    def attempt_pods(self, namespace: str, run: Obj, attempt: int) -> list[Any]:
        selector = f"{LABEL_RUN_UID}={run['metadata']['uid']},{LABEL_ATTEMPT}={attempt}"
        pods = self.call(self.core.list_namespaced_pod, namespace, label_selector=selector).items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp or dt.datetime.min.replace(tzinfo=dt.UTC))

    def log(self, namespace: str, pod: str) -> str:
        text: str = self.call(self.core.read_namespaced_pod_log, pod, namespace, container=PIPELINE_CONTAINER)
        return text

    def follow_log(self, namespace: str, pod: str) -> Iterator[bytes]:
        """The pod's log as it is written, until the container ends."""
        resp = self.call(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=PIPELINE_CONTAINER,
            follow=True,
            _preload_content=False,
        )
        try:
            yield from resp.stream(4096, decode_content=True)
        finally:
            resp.release_conn()

    def events(self, namespace: str, run: Obj) -> list[Any]:
        selector = f"involvedObject.uid={run['metadata']['uid']}"
        found: list[Any] = self.call(self.core.list_namespaced_event, namespace, field_selector=selector).items
        return found


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _api_message(exc: Any) -> str:
    """The Status message the API server sent (``pipelineruns.respawn.dev "x" not found``, ``... is forbidden: ...``)."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    if exc.status == 401:
        return "the API server refused the credentials (401 Unauthorized): log in again or check the kubeconfig"
    return _first_line(message or f"{exc.status} {exc.reason}")


# -- formatting ------------------------------------------------------------------------


def bar(done: int | None, total: int | None, unit: str) -> str:
    """``[####......] 4/10 steps``: plain text, so it survives pipes, logs and CI."""
    if not total:
        return f"[{'.' * BAR_WIDTH}] -"
    d = max(0, min(done or 0, total))
    filled = d * BAR_WIDTH // total
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {d}/{total} {unit}"


def run_progress(run: Obj) -> str:
    """A fan-out parent's items, else the run's steps."""
    st = run.get("status") or {}
    items = st.get("items")
    if isinstance(items, dict):
        return bar(items.get("succeeded"), items.get("total"), "items")
    return bar(st.get("completedSteps"), st.get("totalSteps"), "steps")


def item_counts(run: Obj) -> str:
    items = (run.get("status") or {}).get("items")
    if not isinstance(items, dict):
        return "-"
    parts = [f"{items.get(k) or 0} {k}" for k in ("running", "pending", "failed")]
    return ", ".join(parts)


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's AGE: the largest unit or two (``45s``, ``3m12s``, ``5h``, ``2d``)."""
    when = parse(timestamp)
    if when is None:
        return "-"
    secs = max(0, int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 600:
        return f"{secs // 60}m{secs % 60}s"
    if secs < 3 * 3600:
        return f"{secs // 60}m"
    if secs < 2 * 86400:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


_COLORS = {"Succeeded": "32", "Failed": "31", "Retrying": "33", "Suspended": "36", "Running": "34"}


def phase_text(phase: str | None, color: bool, width: int = 0) -> str:
    text = (phase or "Pending").ljust(width)
    code = _COLORS.get(phase or "")
    return f"\033[{code}m{text}\033[0m" if color and code else text


def table(rows: list[list[str]], out: TextIO, color_col: int | None = None, color: bool = False) -> None:
    """Columns padded like kubectl's (three spaces); the phase column coloured on a terminal."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            last = i == len(row) - 1
            if i == color_col and n > 0 and color:
                cells.append(phase_text(cell, True, 0 if last else widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        out.write("   ".join(cells).rstrip() + "\n")


def attempt_summary(rec: Obj) -> str:
    """``#2 on spot-1 (spot): Preempted (TerminationByKubelet), resumed after a``."""
    spot = _spot(rec, "spot", "on-demand", "spot unknown")
    text = f"#{rec.get('attempt')} on {rec.get('node') or '(no node yet)'} ({spot}): "
    if rec.get("outcome"):
        text += f"{rec['outcome']} ({rec.get('reason') or '-'})"
    else:
        text += f"stopping ({rec['stopping']})" if rec.get("stopping") else "running"
    return text + _resumed(rec, ", ")


def _spot(rec: Obj, yes: str, no: str, unknown: str) -> str:
    """The attempt's node was spot, on-demand, or not known (no node yet, or an old status)."""
    spot = rec.get("spot")
    return unknown if spot is None else yes if spot else no


def _resumed(rec: Obj, sep: str) -> str:
    if rec.get("rerunFrom"):
        return f"{sep}re-ran from {rec['rerunFrom']}"
    if rec.get("resumedFrom"):
        return f"{sep}resumed after {rec['resumedFrom']}"
    return ""


def _duration(rec: Obj) -> str:
    start, end = parse(rec.get("startTime")), parse(rec.get("endTime"))
    if start is None:
        return "-"
    secs = int(((end or dt.datetime.now(dt.UTC)) - start).total_seconds())
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


# -- commands --------------------------------------------------------------------------


def cmd_get(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    namespace = None if args.all_namespaces else args.ns
    if args.runs:
        runs = [c.run(args.ns, name) for name in args.runs]
    else:
        runs = c.runs(namespace)
        if not args.children:  # a parent's row counts its items; thousands of children would bury it
            runs = [r for r in runs if LABEL_PARENT_UID not in (r["metadata"].get("labels") or {})]
    if not runs:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No PipelineRuns found in {where}.", file=sys.stderr)
        return 0
    header = ["NAME", "PHASE", "PROGRESS", "ITEMS", "CURRENT", "ATTEMPT", "PREEMPTIONS", "FAILURES", "AGE"]
    if namespace is None:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for run in sorted(runs, key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"]["name"])):
        st = run.get("status") or {}
        row = [
            run["metadata"]["name"],
            st.get("phase") or "Pending",
            run_progress(run),
            item_counts(run),
            st.get("currentStep") or "-",
            str(st.get("attempt") or 0),
            str(st.get("preemptions") or 0),
            str(st.get("failures") or 0),
            age(run["metadata"].get("creationTimestamp")),
        ]
        if namespace is None:
            row.insert(0, run["metadata"].get("namespace", ""))
        rows.append(row)
    table(rows, out, color_col=header.index("PHASE"), color=_color(out))
    return 0


def cmd_describe(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    run = c.run(args.ns, args.run)
    meta, spec, st = run["metadata"], run.get("spec") or {}, run.get("status") or {}
    w = out.write
    w(f"Name:          {meta['name']}\nNamespace:     {meta.get('namespace', args.ns)}\n")
    w(f"Pipeline:      {spec.get('pipeline', '-')}\n")
    w(f"Phase:         {phase_text(st.get('phase'), _color(out))}\n")
    if st.get("message"):
        w(f"Message:       {st['message']}\n")
    w(f"Progress:      {run_progress(run)}\n")
    if st.get("currentStep"):
        w(f"Current step:  {st['currentStep']}\n")
    last = st.get("lastCheckpoint") or {}
    if last.get("step"):
        w(f"Checkpoint:    after {last['step']} (seq {last.get('seq', '-')}, attempt {last.get('attempt', '-')})\n")
    w(f"Preemptions:   {st.get('preemptions') or 0}\nFailures:      {st.get('failures') or 0}\n")
    w(f"Suspend:       {str(bool(spec.get('suspend'))).lower()}\n")
    if spec.get("rerunFrom"):
        w(f"Rerun from:    {spec['rerunFrom']}\n")
    items = st.get("items")
    if isinstance(items, dict):
        w(f"Items:         {items.get('total', 0)} total: {items.get('succeeded', 0)} succeeded, {item_counts(run)}\n")
        for failed in items.get("failedItems") or []:
            w(f"  failed item {failed.get('index')}: {failed.get('name')}: {failed.get('message') or '-'}\n")
    attempts = st.get("attempts") or []
    if attempts:
        w("Attempts:\n")
        rows = [["#", "NODE", "SPOT", "OUTCOME", "REASON", "STARTED", "DURATION", "RESUMED FROM"]]
        for rec in attempts:
            rows.append(
                [
                    str(rec.get("attempt")),
                    rec.get("node") or "-",
                    _spot(rec, "yes", "no", "-"),
                    rec.get("outcome") or (f"Stopping ({rec['stopping']})" if rec.get("stopping") else "Running"),
                    rec.get("reason") or "-",
                    rec.get("startTime") or "-",
                    _duration(rec),
                    _resumed(rec, "").removeprefix("resumed after ") or "-",
                ]
            )
        table([["  " + r[0], *r[1:]] for r in rows], out)
        for rec in attempts:
            if rec.get("message") and rec.get("outcome") != "Succeeded":
                w(f"  #{rec['attempt']}: {_first_line(rec['message'])}\n")
    elif not isinstance(items, dict):
        w("Attempts:      none yet\n")
    conditions = st.get("conditions") or []
    if conditions:
        w("Conditions:\n")
        for cond in conditions:
            text = f"  {cond.get('type')}={cond.get('status')} ({cond.get('reason') or '-'})"
            w(f"{text}: {cond['message']}\n" if cond.get("message") else f"{text}\n")
    try:
        events = c.events(args.ns, run)
    except UserError as exc:  # RBAC may allow the run but not events: say so, keep the rest
        w(f"Events:        not shown ({exc})\n")
        return 0
    if events:
        w("Events:\n")
        for e in sorted(events, key=_event_time)[-15:]:
            w(f"  {e.type or '-':<8} {e.reason or '-':<16} {e.message or ''}\n")
    return 0


def _event_time(event: Any) -> tuple[dt.datetime, int]:
    """When it last happened; the resourceVersion orders events of the same second (as etcd wrote them)."""
    when = event.last_timestamp or event.event_time or event.first_timestamp
    rv = event.metadata.resource_version or ""
    return (
        when if isinstance(when, dt.datetime) else dt.datetime.min.replace(tzinfo=dt.UTC),
        int(rv) if rv.isdigit() else 0,
    )


def cmd_watch(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    """One line per change (phase, step, attempt), each attempt's end as it happens; ends with the run."""
    deadline = time.monotonic() + args.timeout if args.timeout else None
    last_line = ""
    told: dict[int, bool] = {}  # attempt -> its end was printed
    while True:
        run = c.run(args.ns, args.run)
        st = run.get("status") or {}
        for rec in st.get("attempts") or []:
            n, ended = rec.get("attempt"), bool(rec.get("outcome"))
            if told.get(n) is None or (ended and not told[n]):  # its start, then its end (once each)
                told[n] = ended
                out.write(f"{_clock()}  attempt {attempt_summary(rec)}\n")
        phase = st.get("phase") or "Pending"
        line = (
            f"{phase_text(phase, _color(out), 9)}  {run_progress(run)}"
            + (f"  ({item_counts(run)})" if isinstance(st.get("items"), dict) else "")
            + (f"  step {st['currentStep']}" if st.get("currentStep") else "")
            + f"  attempt {st.get('attempt') or 0}  preemptions {st.get('preemptions') or 0}"
            + f"  failures {st.get('failures') or 0}"
        )
        if line != last_line:
            out.write(f"{_clock()}  {line}\n")
            last_line = line
        out.flush()
        generation = run["metadata"].get("generation")
        if phase in TERMINAL and st.get("observedGeneration") in (None, generation):
            if st.get("message") and phase == "Failed":
                out.write(f"{_clock()}  {st['message']}\n")
            return 0 if phase == "Succeeded" else 1
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"timed out after {args.timeout:g}s: {args.run} is {phase}")
        time.sleep(args.interval)


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def cmd_logs(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Every attempt's log in order, each under a header; -f then follows the live attempts to the end."""
    run = c.run(args.ns, args.run)
    st = run.get("status") or {}
    if isinstance(st.get("items"), dict):
        raise UserError(f"{args.run} is a fan-out parent: its items have the logs (kubectl respawn get --children)")
    attempts = st.get("attempts") or []
    if args.attempt is not None:
        attempts = [a for a in attempts if a.get("attempt") == args.attempt]
        if not attempts:
            have = ", ".join(str(a.get("attempt")) for a in st.get("attempts") or []) or "none"
            raise UserError(f"{args.run} has no attempt {args.attempt} (attempts: {have})")
    if not attempts and not args.follow:
        raise UserError(f"{args.run} has no attempts yet (phase {st.get('phase') or 'Pending'})")
    shown: set[int] = set()
    while True:
        for rec in attempts:
            n = int(rec["attempt"])
            if n in shown:
                continue
            live = _wait_pod(c, args.ns, args.run, n) if args.follow and not rec.get("outcome") else None
            if live is not None:
                run, pod = live
                _header(out, rec, pod)
                for chunk in c.follow_log(args.ns, pod):
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
            else:
                pods = c.attempt_pods(args.ns, run, n)
                pod = pods[-1].metadata.name if pods else rec.get("pod")
                _header(out, rec, pod)
                if pod is None:
                    out.write("(no pod yet)\n")
                elif not pods:
                    out.write("(the pod is gone; its log went with it)\n")
                else:
                    text = c.log(args.ns, pod)
                    out.write(text if text.endswith("\n") or not text else text + "\n")
            shown.add(n)
        out.flush()
        if not args.follow or args.attempt is not None:
            return 0
        run = c.run(args.ns, args.run)
        st = run.get("status") or {}
        attempts = st.get("attempts") or []
        if st.get("phase") in TERMINAL and all(int(a["attempt"]) in shown for a in attempts):
            return 0
        if all(int(a["attempt"]) in shown for a in attempts):
            time.sleep(args.interval)


def _wait_pod(c: Client, namespace: str, name: str, attempt: int) -> tuple[Obj, str] | None:
    """The run and the live attempt's pod, once the Job has made it (a fresh attempt has none
    for a moment); ``None`` if the attempt ended first (its pod deleted before it ran)."""
    while True:
        run = c.run(namespace, name)
        pods = c.attempt_pods(namespace, run, attempt)
        if pods:
            return run, str(pods[-1].metadata.name)
        records = (run.get("status") or {}).get("attempts") or []
        if any(a.get("attempt") == attempt and a.get("outcome") for a in records):
            return None
        time.sleep(0.5)


def _header(out: TextIO, rec: Obj, pod: str | None) -> None:
    out.write(f"==> attempt {attempt_summary(rec)}; pod {pod or '-'} <==\n")


def cmd_suspend(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    c.patch_spec(args.ns, args.run, {"suspend": True})
    out.write(f"{RESOURCE}/{args.run} suspended (the running attempt commits a checkpoint, then stops)\n")
    return 0


def cmd_resume(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    c.patch_spec(args.ns, args.run, {"suspend": False})
    out.write(f"{RESOURCE}/{args.run} resumed (the next attempt continues from its checkpoint)\n")
    return 0


RERUN_ACK_SECONDS = 30.0


def cmd_rerun(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    step = args.from_step
    if not re.match(STEP_PATTERN, step):
        raise UserError(f"{step!r} is not a step name (a Python identifier)")
    run = c.run(args.ns, args.run)
    steps = known_steps(c, args.ns, run)
    total = (run.get("status") or {}).get("totalSteps")
    if steps and total and len(steps) >= total and step not in steps:
        raise UserError(f"{args.run} has no step {step!r}; its steps are {', '.join(steps)}")
    if not (total and len(steps) >= total):
        print(f"note: not every step of {args.run} is known yet; the pipeline itself checks {step!r}", file=sys.stderr)
    if (run.get("spec") or {}).get("rerunFrom") == step:
        # The operator acts on a *new* rerunFrom: clear it, let the operator see that, set it again.
        cleared = c.patch_spec(args.ns, args.run, {"rerunFrom": None})
        _wait_cleared(c, args.ns, args.run, cleared["metadata"]["generation"])
    c.patch_spec(args.ns, args.run, {"rerunFrom": step})
    out.write(f"{RESOURCE}/{args.run} re-runs from step {step} (that step and the later ones run again)\n")
    return 0


def _wait_cleared(c: Client, namespace: str, name: str, generation: int) -> None:
    deadline = time.monotonic() + RERUN_ACK_SECONDS
    while True:
        st = c.run(namespace, name).get("status") or {}
        if (st.get("observedGeneration") or 0) >= generation and not st.get("rerun"):
            return
        if time.monotonic() > deadline:
            raise UserError(
                f"the operator did not see the cleared rerunFrom of {name} within {RERUN_ACK_SECONDS:g}s; is it running?"
            )
        time.sleep(0.5)


def known_steps(c: Client, namespace: str, run: Obj) -> list[str]:
    """The run's step names in order, from its attempts' logs (each ``step_start`` line names
    one, with its index); the status alone names only the current and last steps."""
    found: dict[str, int] = {}
    for rec in (run.get("status") or {}).get("attempts") or []:
        try:
            pods = c.attempt_pods(namespace, run, int(rec["attempt"]))
            text = c.log(namespace, pods[-1].metadata.name) if pods else ""
        except UserError:  # pods or their logs forbidden, or gone: what is known stays partial
            break
        for line in text.splitlines():
            if '"step_start"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("step"), str):
                found.setdefault(event["step"], int(event.get("index") or 0))
    return sorted(found, key=lambda s: found[s])


# -- the command line ------------------------------------------------------------------


def _color(out: TextIO) -> bool:
    return out.isatty() and "NO_COLOR" not in os.environ


def _parser() -> argparse.ArgumentParser:
    # Connection flags are accepted before and after the subcommand, as kubectl accepts them.
    def connection(p: argparse.ArgumentParser, default: Any) -> None:
        p.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
        p.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
        p.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")

    parser = argparse.ArgumentParser(
        prog="kubectl respawn", description="Look at and steer Respawn PipelineRuns.", epilog=__doc__.split("\n\n")[1]
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    connection(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        connection(p, argparse.SUPPRESS)
        p.set_defaults(fn=fn)
        return p

    p = command("get", cmd_get, "List runs with a progress bar; fan-out parents with their item counts.")
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="runs of every namespace")
    p.add_argument(
        "--children", action="store_true", help="also list fan-out children (hidden: the parent counts them)"
    )
    p = command("watch", cmd_watch, "Follow a run's steps, attempts and preemptions until it succeeds or fails.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: never)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p = command("logs", cmd_logs, "Print every attempt's log in order, each under a header.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--attempt", type=int, help="only this attempt")
    p.add_argument("-f", "--follow", action="store_true", help="keep following the live attempts until the run ends")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p = command("describe", cmd_describe, "Show a run: progress, the attempts timeline, conditions and events.")
    p.add_argument("run", metavar="RUN")
    p = command("suspend", cmd_suspend, "Stop a run after its next checkpoint and keep its state (spec.suspend).")
    p.add_argument("run", metavar="RUN")
    p = command("resume", cmd_resume, "Let a suspended run go on from its checkpoint.")
    p.add_argument("run", metavar="RUN")
    p = command(
        "rerun",
        cmd_rerun,
        "Run STEP and the later steps again (spec.rerunFrom); the earlier steps' results are reused "
        "if the checkpoint kept them (checkpoint.retain).",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--from", dest="from_step", required=True, metavar="STEP", help="the first step to run again")
    return parser


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C ends `watch` and `logs -f` even when the shell started us with SIGINT ignored
    # (a background job), as kubectl's own signal handling does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = _parser().parse_args(argv)
    try:
        client = Client(args.kubeconfig, args.context)
        args.ns = args.namespace or client.default_namespace
        code: int = args.fn(client, args, sys.stdout)
        return code
    except UserError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130  # Ctrl-C in watch or logs -f: quietly, like kubectl
    except BrokenPipeError:  # `kubectl respawn logs RUN | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

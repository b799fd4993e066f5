"""Operator scale: many PipelineRuns alive at once against the Kubernetes API emulator.

    .venv/bin/python bench/bench_operator.py [--runs 1000] [--preempt 200] [--gap 0.002]

Starts ``respawn_local.apiserver.ApiServerThread`` in this process with the PipelineRun
CRD from ``respawn_operator.crdgen.build_crd()``, runs ``respawn-operator --standalone``
(from the venv's bin directory) as a subprocess against it, creates ``--runs``
PipelineRuns one after another, and then preempts the first attempt of ``--preempt`` of them.

No kubelet or Job controller runs: the benchmark plays the pods itself by writing
through the emulator's store. For each preempted run it creates the attempt-1 pod
(labelled like the Job's pod template), patches its status to Running, waits until the
operator reports the run Running, then patches the pod status to
Failed + ``DisruptionTarget``/``PreemptionByScheduler`` + exit code 143 -- what the
kubelet writes for a pod the scheduler preempted.

Times are taken on the emulator's event loop from its own watch stream (ADDED of a
PipelineRun, ADDED of a Job, the pod's MODIFIED to Failed), so they are the moments the
objects changed in the API server, not when a poller happened to notice.

Figures (targets in brackets):
  1. PipelineRun created -> attempt-1 Job created: p50/p99/max [p99 <= 1 s]
  2. pod preempted -> attempt-2 Job created: p50/p99/max [p99 <= 2 s]
  3. API requests to the emulator per run (create phase per run, pod-Running and
     preemption phases per preempted run, and in all), by verb and resource
  4. operator RSS (VmRSS, and the peak VmHWM) with all runs alive [<= 200 MB]

The emulator shares this process (and the machine) with the operator, so the figures
depend on the load: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from respawn_local.apiserver import ApiServerThread, Watcher, WatchEvent
from respawn_operator.crdgen import build_crd

Counts = dict[tuple[str, str], int]
NAMESPACE = "default"
NODE = "n1"


class EventClock:
    """Record, on the emulator's loop, when objects were created or a pod failed.

    Subscribes to the emulator's internal watch fan-out for PipelineRuns, Jobs and Pods;
    a task on the server loop stamps each event with ``time.monotonic()`` as it arrives.
    """

    def __init__(self, api: ApiServerThread, namespace: str | None = NAMESPACE) -> None:
        """`namespace` None: every namespace (names must then be unique across them)."""
        self.api = api
        self.namespace = namespace
        self.created: dict[tuple[str, str], float] = {}  # (resource, name) -> first ADDED
        self.pod_failed: dict[str, float] = {}  # pod name -> first status.phase Failed
        self.new_jobs: list[tuple[str, str]] = []
        """(namespace, name) of every Job as it was created, in order (a pod player reads it)."""
        self._watchers: list[Watcher] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Subscribe to the three resource types."""

        def op() -> None:
            srv = self.api.server
            for resource in ("pipelineruns", "jobs", "pods"):
                rtype = srv.resolve(resource)
                w = Watcher(rtype.key, self.namespace, asyncio.Queue())
                srv._watchers.add(w)
                self._watchers.append(w)
                self._tasks.append(asyncio.get_running_loop().create_task(self._consume(resource, w)))

        self.api.call(op)

    async def _consume(self, resource: str, w: Watcher) -> None:
        while True:
            ev: WatchEvent | None = await w.queue.get()
            if ev is None:  # the emulator closed its watches (fault injection)
                continue
            t = time.monotonic()
            name = ev.obj["metadata"]["name"]
            if ev.type == "ADDED":
                if resource == "jobs" and (resource, name) not in self.created:
                    self.new_jobs.append((ev.obj["metadata"].get("namespace", ""), name))
                self.created.setdefault((resource, name), t)
            if resource == "pods" and (ev.obj.get("status") or {}).get("phase") == "Failed":
                self.pod_failed.setdefault(name, t)

    def stop(self) -> None:
        """Unsubscribe and cancel the consumer tasks."""

        def op() -> None:
            for w in self._watchers:
                self.api.server._watchers.discard(w)
            for task in self._tasks:
                task.cancel()

        self.api.call(op)

    def count(self, resource: str, names: Iterable[str]) -> int:
        """How many of `names` have been created."""
        return sum((resource, n) in self.created for n in names)


def wait_until(what: str, cond: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `cond` until true or `timeout` seconds pass; warn and return False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            print(f"  warning: timed out after {timeout:.0f}s waiting for {what}")
            return False
        time.sleep(interval)


def wait_quiet(api: ApiServerThread, quiet: float, timeout: float) -> bool:
    """Wait until no API request arrived for `quiet` seconds (the operator caught up)."""
    last = sum(api.request_counts().values())
    since = time.monotonic()

    def cond() -> bool:
        nonlocal last, since
        now = sum(api.request_counts().values())
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet

    return wait_until(f"{quiet:.0f}s without API requests", cond, timeout, interval=0.1)


def start_operator(
    kubeconfig: str, work: Path, verbose: bool, namespaces: list[str] | None = None, log_name: str = "operator.log"
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``respawn-operator --standalone`` from this venv (serving `namespaces`, default
    all); output goes to work/<log_name>."""
    exe = Path(sys.executable).parent / "respawn-operator"
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "RESPAWN_DEFAULT_CHECKPOINT_URI": f"file://{work / 'ckpt'}",
        "RESPAWN_METRICS_PORT": "0",
        "RESPAWN_RESYNC_SECONDS": "60",
    }
    log = work / log_name
    scope = [arg for ns in namespaces or [] for arg in ("-n", ns)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "--standalone", *scope] + (["-v"] if verbose else []),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def operator_ready(api: ApiServerThread, proc: subprocess.Popen[bytes]) -> bool:
    """True once the operator watches PipelineRuns, Jobs and Pods (kopf runs startup first)."""
    if proc.poll() is not None:
        raise RuntimeError(f"respawn-operator exited with {proc.returncode}")
    counts = api.request_counts()
    return all(counts.get(("watch", r), 0) > 0 for r in ("pipelineruns", "jobs", "pods"))


def run_statuses(api: ApiServerThread) -> dict[str, dict[str, Any]]:
    """status of every PipelineRun, by name."""
    return {o["metadata"]["name"]: o.get("status") or {} for o in api.list("pipelineruns", NAMESPACE)}


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc/<pid>/status."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def percentile(sorted_xs: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_xs[max(0, math.ceil(p * len(sorted_xs)) - 1)]


def latency_line(label: str, xs: list[float], expected: int, target: float) -> str:
    """One printed line: n, p50/p99/max in ms and the target."""
    if not xs:
        return f"{label}: n=0/{expected} (nothing measured) [target p99 <= {target:g} s]"
    xs = sorted(xs)
    p99 = percentile(xs, 0.99)
    verdict = "ok" if p99 <= target and len(xs) == expected else "MISSED"
    return (
        f"{label}: n={len(xs)}/{expected} p50={percentile(xs, 0.5) * 1000:.0f}ms "
        f"p99={p99 * 1000:.0f}ms max={xs[-1] * 1000:.0f}ms [target p99 <= {target:g} s: {verdict}]"
    )


def diff(after: Counts, before: Counts) -> Counts:
    """Per-key request count differences, zeros dropped."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def fmt_counts(counts: Counts, per: int) -> str:
    """Total, per-unit and by-(verb, resource) breakdown of request counts."""
    total = sum(counts.values())
    parts = ", ".join(f"{v} {r} {n / per:.2f}" for (v, r), n in sorted(counts.items()))
    return f"{total / per:.2f} ({total} in all): {parts}"


def create_runs(api: ApiServerThread, n: int, gap: float) -> list[str]:
    """Create PipelineRuns r0..r{n-1}, `gap` seconds apart; return their names."""
    names = [f"r{i}" for i in range(n)]
    t0 = time.monotonic()
    for name in names:
        api.create(
            {
                "apiVersion": "respawn.dev/v1alpha1",
                "kind": "PipelineRun",
                "metadata": {"name": name},
                "spec": {"pipeline": "x:Y"},
            },
            namespace=NAMESPACE,
        )
        if gap:
            time.sleep(gap)
    print(f"created {n} PipelineRuns in {time.monotonic() - t0:.1f}s")
    return names


def start_pods(api: ApiServerThread, runs: list[str]) -> None:
    """Play the kubelet: create each run's attempt-1 pod on the node and mark it Running."""
    for r in runs:
        uid = api.get("pipelineruns", r, NAMESPACE)["metadata"]["uid"]
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{r}-a1-x",
                    "namespace": NAMESPACE,
                    "labels": {"respawn.dev/run-uid": uid, "respawn.dev/attempt": "1", "respawn.dev/run": r},
                    "annotations": {"respawn.dev/run-name": r},
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "pipeline", "image": "x"}]},
            },
            namespace=NAMESPACE,
        )
        api.patch("pods", f"{r}-a1-x", {"status": {"phase": "Running"}}, NAMESPACE, subresource="status")


def preempt_pods(api: ApiServerThread, runs: list[str], gap: float) -> None:
    """Write the status the kubelet writes for a preempted pod: Failed, DisruptionTarget, exit 143."""
    for r in runs:
        api.patch(
            "pods",
            f"{r}-a1-x",
            {
                "status": {
                    "phase": "Failed",
                    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
                    "containerStatuses": [{"name": "pipeline", "state": {"terminated": {"exitCode": 143}}}],
                }
            },
            NAMESPACE,
            subresource="status",
        )
        if gap:
            time.sleep(gap)


def bench(api: ApiServerThread, proc: subprocess.Popen[bytes], clock: EventClock, args: argparse.Namespace) -> None:
    """The measured part: create, wait for Jobs, preempt a sample, wait for the next Jobs, report."""
    n, timeout = args.runs, args.timeout
    startup = api.request_counts()

    names = create_runs(api, n, args.gap)
    wait_until(f"{n} attempt-1 Jobs", lambda: clock.count("jobs", (f"{r}-a1" for r in names)) >= n, timeout)
    lat1 = [
        clock.created[("jobs", f"{r}-a1")] - clock.created[("pipelineruns", r)]
        for r in names
        if ("jobs", f"{r}-a1") in clock.created
    ]
    print(latency_line("[1] PipelineRun created -> Job created", lat1, n, 1.0))
    wait_until(
        "every run's status at attempt 1",
        lambda: sum(s.get("attempt", 0) >= 1 for s in run_statuses(api).values()) >= n,
        timeout,
        0.5,
    )
    wait_quiet(api, 1.0, timeout)
    created = api.request_counts()

    sample = [f"r{i}" for i in range(0, n, max(1, n // args.preempt))][: args.preempt]
    start_pods(api, sample)
    wait_until(
        f"{len(sample)} runs reported Running",
        lambda: sum(run_statuses(api).get(r, {}).get("phase") == "Running" for r in sample) >= len(sample),
        timeout,
        0.5,
    )
    wait_quiet(api, 1.0, timeout)
    running = api.request_counts()

    preempt_pods(api, sample, args.preempt_gap)
    wait_until(
        f"{len(sample)} attempt-2 Jobs",
        lambda: clock.count("jobs", (f"{r}-a2" for r in sample)) >= len(sample),
        timeout,
    )
    lat2 = [
        clock.created[("jobs", f"{r}-a2")] - clock.pod_failed[f"{r}-a1-x"]
        for r in sample
        if ("jobs", f"{r}-a2") in clock.created and f"{r}-a1-x" in clock.pod_failed
    ]
    print(latency_line("[2] pod preempted -> next attempt's Job created", lat2, len(sample), 2.0))
    wait_until(
        "preempted runs' status at attempt 2",
        lambda: sum(run_statuses(api).get(r, {}).get("attempt", 0) >= 2 for r in sample) >= len(sample),
        timeout,
        0.5,
    )
    wait_quiet(api, 1.0, timeout)
    done = api.request_counts()
    mine = api.request_counts("respawn-operator")

    print("[3] API requests (every HTTP client here is the operator: kopf and its reconciler)")
    print(f"    operator startup: {sum(startup.values())}")
    print(f"    create phase, per created run: {fmt_counts(diff(created, startup), n)}")
    print(f"    pod Running, per preempted run: {fmt_counts(diff(running, created), len(sample))}")
    print(f"    preemption, per preempted run: {fmt_counts(diff(done, running), len(sample))}")
    total = sum(diff(done, startup).values())
    print(
        f"    whole benchmark ({n} runs, {len(sample)} preempted): {total} requests, {total / n:.1f} per run "
        f"({sum(mine.values())} of them from the reconciler's own client, the rest kopf)"
    )

    rss, hwm = rss_mb(proc.pid)
    verdict = "ok" if rss <= 200 else "MISSED"
    print(f"[4] operator RSS with {n} runs alive: {rss:.0f} MB (peak {hwm:.0f} MB) [target <= 200 MB: {verdict}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="PipelineRuns alive at once")
    ap.add_argument("--preempt", type=int, default=200, help="how many of them get preempted")
    ap.add_argument("--gap", type=float, default=0.002, help="seconds between PipelineRun creations")
    ap.add_argument("--preempt-gap", type=float, default=0.005, help="seconds between preemptions")
    ap.add_argument("--timeout", type=float, default=120.0, help="deadline of each wait, seconds")
    ap.add_argument("--verbose-operator", action="store_true", help="run the operator with -v")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (operator.log) afterwards")
    args = ap.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    work = Path(tempfile.mkdtemp(prefix="respawn-bench-op-"))
    api = ApiServerThread(history_size=max(5000, 200 * args.runs))
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    ok = False
    try:
        api.start()
        kubeconfig = api.write_kubeconfig(str(work / "kubeconfig"))
        api.create(build_crd())
        api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        clock = EventClock(api)
        clock.start()
        proc, log = start_operator(kubeconfig, work, args.verbose_operator)
        t = time.monotonic()
        if not wait_until("the operator to watch pipelineruns, jobs and pods", lambda: operator_ready(api, proc), 60):
            raise RuntimeError("respawn-operator did not start")
        print(f"operator ready in {time.monotonic() - t:.1f}s")
        bench(api, proc, clock, args)
        clock.stop()
        ok = True
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        api.stop()
        if not ok and log is not None and log.exists():
            print("--- operator.log (last 30 lines) ---", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

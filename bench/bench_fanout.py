"""Fan-out scale: one parent PipelineRun over many items, against the Kubernetes API emulator.

    .venv/bin/python bench/bench_fanout.py [--items 2000] [--parallelism 200] [--qps 50] [--burst 100]
        [--operators K]

With `--operators K`, the items are split over K namespaces, each with its own parent and
its own operator (`respawn-operator -n NAMESPACE`, the chart's `config.watchNamespaces`):
how a cluster scales past what one operator's client rate allows.

The emulator runs in this process with the CRD; `respawn-operator --standalone` runs as
a subprocess. No kubelet runs: like bench_operator.py, this process plays the pods.
For every attempt-1 Job of a child it creates the pod (labelled as the Job's template
would) and marks it Succeeded with exit code 0, so each item finishes as soon as its
Job exists and the parent starts the next one.

Figures (issue 14's targets in brackets, for 10,000 items at parallelism 500):
  1. parent created -> the first `parallelism` Jobs created
  2. child created -> its Job created: p50/p99 [p99 <= 1 s]
  3. all items done (parent Succeeded): wall time, items a second
  4. API requests per item over its whole life, by verb and resource [<= 10]
  5. the parent's status writes a second [<= 1]
  6. operator RSS (VmRSS, peak VmHWM) with every child alive [<= 400 MB]
  7. with --preempt-every N: a child's pod preempted -> its next Job created [p99 <= 2 s]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_operator import (
    NAMESPACE,
    NODE,
    EventClock,
    diff,
    fmt_counts,
    latency_line,
    operator_ready,
    rss_mb,
    start_operator,
    wait_until,
)
from respawn_local.apiserver import ApiServerThread
from respawn_operator.crdgen import build_crd
from respawn_operator.fanout import LABEL_PARENT_UID

PARENT = "fan"


PREEMPTED = {
    "phase": "Failed",
    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
    "containerStatuses": [{"name": "pipeline", "state": {"terminated": {"exitCode": 143}}}],
}
"""What the kubelet writes for a pod the scheduler preempted (bench_operator.py's)."""
SUCCEEDED = {
    "phase": "Succeeded",
    "containerStatuses": [{"name": "pipeline", "state": {"terminated": {"exitCode": 0}}}],
}


def finish_pods(api: ApiServerThread, clock: EventClock, handled: int, preempt_every: int = 0) -> int:
    """Play the kubelet for every child Job created since the first `handled` the clock saw:
    its pod ran and exited 0, or, for every `preempt_every`-th attempt-1 Job, was preempted
    (its attempt 2 then succeeds). Returns how many Jobs are handled now. (It used to list
    every Job each pass: O(jobs) a pass, a whole core above ~6,000 items.)"""
    new = clock.new_jobs[handled:]
    for number, (namespace, name) in enumerate(new, start=handled):
        job = api.get("jobs", name, namespace)
        run = ((job or {}).get("metadata", {}).get("annotations") or {}).get("respawn.dev/run-name")
        if job is None or not run or not (name.endswith("-a1") or name.endswith("-a2")):
            continue
        preempt = bool(preempt_every) and name.endswith("-a1") and number % preempt_every == 0
        labels = job["spec"]["template"]["metadata"]["labels"]
        pod = f"{name}-x"
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {"respawn.dev/run-name": run},
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "pipeline", "image": "x"}]},
            },
            namespace=namespace,
        )
        api.patch("pods", pod, {"status": PREEMPTED if preempt else SUCCEEDED}, namespace, subresource="status")
    return handled + len(new)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000, help="items in all (split evenly over --operators)")
    ap.add_argument("--parallelism", type=int, default=200, help="of each parent")
    ap.add_argument("--qps", type=float, default=50.0, help="of each operator's client")
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument(
        "--operators",
        type=int,
        default=1,
        help="K > 1: K namespaces, each with one parent of items/K and its own operator (-n NAMESPACE)",
    )
    ap.add_argument(
        "--preempt-every",
        type=int,
        default=0,
        metavar="N",
        help="preempt the pod of every N-th attempt-1 Job (its attempt 2 succeeds): figure [7]",
    )
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    api = ApiServerThread()
    api.start()
    api.create(build_crd())
    api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    kubeconfig = api.write_kubeconfig(str(work / "kubeconfig"))
    import os

    os.environ.update(RESPAWN_API_QPS=str(args.qps), RESPAWN_API_BURST=str(args.burst))
    k = args.operators
    spaces = [NAMESPACE] if k == 1 else [f"fan-{i}" for i in range(k)]
    parents = [(ns, PARENT if k == 1 else f"{PARENT}{i}") for i, ns in enumerate(spaces)]
    for ns in spaces:
        if ns != NAMESPACE:
            api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    procs = [
        start_operator(kubeconfig, work, args.verbose, None if k == 1 else [ns], f"operator-{i}.log")
        for i, ns in enumerate(spaces)
    ]
    clock = EventClock(api, NAMESPACE if k == 1 else None)
    clock.start()
    per = args.items // k
    try:
        wait_until("the operators to watch", lambda: all(operator_ready(api, proc) for proc, _ in procs), 60)
        before = api.request_counts()
        started = time.monotonic()
        for i, (ns, parent) in enumerate(parents):
            api.create(
                {
                    "apiVersion": "respawn.dev/v1alpha1",
                    "kind": "PipelineRun",
                    "metadata": {"name": parent},
                    "spec": {
                        "pipeline": "dataprep",
                        "params": {"output_uri": "file:///tmp/out/$(item.key)"},
                        "foreach": {
                            "param": "video_uri",
                            "items": [f"gs://b/v/{i:02d}-{j:06d}.mp4" for j in range(per)],
                        },
                        "parallelism": args.parallelism,
                    },
                },
                namespace=ns,
            )
        wave = args.parallelism * k
        jobs = lambda: sum(1 for (r, n) in clock.created if r == "jobs" and n.endswith("-a1"))
        wait_until(f"the first {wave} Jobs", lambda: jobs() >= wave, args.timeout)
        first_wave = time.monotonic() - started
        handled = 0
        peak = [0.0] * k
        deadline = started + args.timeout
        phases: list[str | None] = [None] * k
        while time.monotonic() < deadline:
            handled = finish_pods(api, clock, handled, args.preempt_every)
            phases = [(api.get("pipelineruns", name, ns).get("status") or {}).get("phase") for ns, name in parents]
            peak = [max(peak[i], rss_mb(proc.pid)[0]) for i, (proc, _) in enumerate(procs)]
            if all(phase in ("Succeeded", "Failed") for phase in phases):
                break
            time.sleep(0.2)
        total = time.monotonic() - started
        after = api.request_counts()
        kids = []
        for ns, name in parents:
            uid = api.get("pipelineruns", name, ns)["metadata"]["uid"]
            kids += api.list("pipelineruns", ns, label_selector=f"{LABEL_PARENT_UID}={uid}")
        lat = [
            clock.created[("jobs", f"{c['metadata']['name']}-a1")]
            - clock.created[("pipelineruns", c["metadata"]["name"])]
            for c in kids
            if ("jobs", f"{c['metadata']['name']}-a1") in clock.created
            and ("pipelineruns", c["metadata"]["name"]) in clock.created
        ]
        requests = diff(after, before)
        status_writes = requests.get(("patch", "pipelineruns/status"), 0)
        items = per * k
        print(
            f"{items} items in {k} namespace(s), one operator each, parallelism {args.parallelism} a parent, "
            f"client {args.qps:g} qps / burst {args.burst} each; parents {phases} with {len(kids)} children"
        )
        print(f"[1] parents created -> first {wave} Jobs: {first_wave:.1f}s")
        print(latency_line("[2] child created -> its Job created", lat, items, 1.0))
        print(f"[3] all items done in {total:.1f}s ({items / total:.1f} items/s)")
        print(f"[4] API requests per item: {fmt_counts(requests, items)}  [<= 10]")
        print(f"[5] status writes (children's and the parents'): {status_writes / total:.1f}/s in all")
        if args.preempt_every:
            again = [
                clock.created[("jobs", f"{c['metadata']['name']}-a2")]
                - clock.pod_failed[f"{c['metadata']['name']}-a1-x"]
                for c in kids
                if ("jobs", f"{c['metadata']['name']}-a2") in clock.created
                and f"{c['metadata']['name']}-a1-x" in clock.pod_failed
            ]
            preempted = sum(f"{c['metadata']['name']}-a1-x" in clock.pod_failed for c in kids)
            print(latency_line("[7] pod preempted -> the item's next Job created", again, preempted, 2.0))
        for i, (proc, _) in enumerate(procs):
            rss, hwm = rss_mb(proc.pid)
            print(f"[6] operator {i} RSS {rss:.0f} MB (peak seen {peak[i]:.0f} MB, VmHWM {hwm:.0f} MB)  [<= 400 MB]")
    finally:
        clock.stop()
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            proc.wait(30)
            print(f"operator log: {log}")
        api.stop()


if __name__ == "__main__":
    main()

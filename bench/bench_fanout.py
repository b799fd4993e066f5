"""Fan-out scale: one parent PipelineRun over many items, against the Kubernetes API emulator.

    .venv/bin/python bench/bench_fanout.py [--items 2000] [--parallelism 200] [--qps 50] [--burst 100]

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


def finish_pods(api: ApiServerThread, done: set[str]) -> int:
    """Play the kubelet for every child Job without a pod yet: its pod ran and exited 0."""
    made = 0
    for job in api.list("jobs", NAMESPACE):
        name = job["metadata"]["name"]
        run = (job["metadata"].get("annotations") or {}).get("respawn.dev/run-name")
        if name in done or not run or not name.endswith("-a1"):
            continue
        labels = job["spec"]["template"]["metadata"]["labels"]
        pod = f"{name}-x"
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": NAMESPACE,
                    "labels": labels,
                    "annotations": {"respawn.dev/run-name": run},
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "pipeline", "image": "x"}]},
            },
            namespace=NAMESPACE,
        )
        api.patch(
            "pods",
            pod,
            {
                "status": {
                    "phase": "Succeeded",
                    "containerStatuses": [{"name": "pipeline", "state": {"terminated": {"exitCode": 0}}}],
                }
            },
            NAMESPACE,
            subresource="status",
        )
        done.add(name)
        made += 1
    return made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--parallelism", type=int, default=200)
    ap.add_argument("--qps", type=float, default=50.0)
    ap.add_argument("--burst", type=int, default=100)
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
    proc, log = start_operator(kubeconfig, work, args.verbose)
    clock = EventClock(api)
    clock.start()
    try:
        wait_until("the operator to watch", lambda: operator_ready(api, proc), 60)
        before = api.request_counts()
        started = time.monotonic()
        api.create(
            {
                "apiVersion": "respawn.dev/v1alpha1",
                "kind": "PipelineRun",
                "metadata": {"name": PARENT},
                "spec": {
                    "pipeline": "dataprep",
                    "params": {"output_uri": "file:///tmp/out/$(item.key)"},
                    "foreach": {"param": "video_uri", "items": [f"gs://b/v/{i:06d}.mp4" for i in range(args.items)]},
                    "parallelism": args.parallelism,
                },
            },
            namespace=NAMESPACE,
        )
        jobs = lambda: sum(1 for (r, n) in clock.created if r == "jobs" and n.endswith("-a1"))
        wait_until(f"the first {args.parallelism} Jobs", lambda: jobs() >= args.parallelism, args.timeout)
        first_wave = time.monotonic() - started
        done: set[str] = set()
        peak = 0.0
        deadline = started + args.timeout
        phase = None
        while time.monotonic() < deadline:
            finish_pods(api, done)
            phase = (api.get("pipelineruns", PARENT, NAMESPACE).get("status") or {}).get("phase")
            peak = max(peak, rss_mb(proc.pid)[0])
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.2)
        total = time.monotonic() - started
        after = api.request_counts()
        rss, hwm = rss_mb(proc.pid)
        uid = api.get("pipelineruns", PARENT, NAMESPACE)["metadata"]["uid"]
        kids = api.list("pipelineruns", NAMESPACE, label_selector=f"{LABEL_PARENT_UID}={uid}")
        lat = [
            clock.created[("jobs", f"{k['metadata']['name']}-a1")]
            - clock.created[("pipelineruns", k["metadata"]["name"])]
            for k in kids
            if ("jobs", f"{k['metadata']['name']}-a1") in clock.created
            and ("pipelineruns", k["metadata"]["name"]) in clock.created
        ]
        requests = diff(after, before)
        status_writes = requests.get(("patch", "pipelineruns/status"), 0) - len(kids) * 0
        print(
            f"{args.items} items, parallelism {args.parallelism}, client {args.qps:g} qps / burst {args.burst}; "
            f"parent {phase} with {len(kids)} children"
        )
        print(f"[1] parent created -> first {args.parallelism} Jobs: {first_wave:.1f}s")
        print(latency_line("[2] child created -> its Job created", lat, args.items, 1.0))
        print(f"[3] all items done in {total:.1f}s ({args.items / total:.1f} items/s)")
        print(f"[4] API requests per item: {fmt_counts(requests, args.items)}  [<= 10]")
        print(f"[5] status writes (children's and the parent's): {status_writes / total:.1f}/s in all")
        print(f"[6] operator RSS {rss:.0f} MB (peak seen {peak:.0f} MB, VmHWM {hwm:.0f} MB)  [<= 400 MB]")
    finally:
        clock.stop()
        proc.terminate()
        proc.wait(30)
        api.stop()
        print(f"operator log: {log}")


if __name__ == "__main__":
    main()

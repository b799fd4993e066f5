"""`respawn-demo`: the whole system on this machine, no cluster and no cloud.

It starts the Kubernetes API emulator, the real operator (a `respawn-operator`
process), and the pod simulator, which runs every attempt's pod as a real
`pipeline-runtime` process with `file://` checkpoints. It generates a video,
applies examples/dataprep-run.yaml pointed at it, preempts the pod partway the
way a spot VM reclaim does (DisruptionTarget, SIGTERM, grace period), shows the
run as `kubectl get pipelineruns` would while it changes, and prints where the
dataset is and which steps the resumed attempt skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline_runtime.contracts import PROGRESS_ANNOTATION
from pipeline_runtime.extras import exit_if_missing

try:
    import yaml
    from respawn_operator import ANNOTATION_RUN_NAME
    from respawn_operator.crdgen import build_crd

    from respawn_local.apiserver import ApiServerThread
    from respawn_local.podsim import PodSim, SimNode
    from respawn_local.sample_video import make_video
    from respawn_local.testkit import WaitTimeout, runner_rbac, wait_for
except ModuleNotFoundError as e:  # installed without [local]: one line, no traceback
    exit_if_missing(e, "respawn-demo", "local")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dataprep-run.yaml"
FANOUT_EXAMPLE = REPO / "examples" / "fanout-run.yaml"
NS = "default"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def say(text: str = "") -> None:
    print(text, flush=True)


class Table:
    """Prints the PipelineRun table (server-side printing, like kubectl) when it changes."""

    def __init__(self, api: ApiServerThread) -> None:
        self.url = f"{api.url}/apis/respawn.dev/v1alpha1/namespaces/{NS}/pipelineruns"
        self.headers = {"Accept": TABLE, "Authorization": f"Bearer {api.admin_token}"}
        self.tls = ssl.create_default_context(cafile=api.ca_file) if api.ca_file else None
        self.last: list[list[str]] | None = None
        self.header_shown = False

    def poll(self) -> None:
        req = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(req, timeout=5, context=self.tls) as resp:
            table = json.load(resp)
        cols = [c["name"].upper() for c in table["columnDefinitions"] if c.get("priority", 0) == 0]
        rows = [
            [
                "" if v is None else str(v)
                for v, c in zip(r["cells"], table["columnDefinitions"])
                if c.get("priority", 0) == 0
            ]
            for r in table["rows"]
        ]
        # AGE changes every second: only a change elsewhere is worth a line, and only the
        # rows that changed (a fan-out has a row per item).
        before = {tuple(r[:1]): r[:-1] for r in self.last or []}
        changed = [r for r in rows if before.get(tuple(r[:1])) != r[:-1]]
        if not changed:
            return
        self.last = rows
        widths = [max(len(x) for x in col) + 3 for col in zip(cols, *rows)]
        widths = [max(w, {"CURRENT": 17, "PHASE": 12, "NAME": 22}.get(c, 0)) for w, c in zip(widths, cols)]
        if not self.header_shown:
            say("  " + "".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
            self.header_shown = True
        for r in changed:
            say("  " + "".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def load_example(video: Path, out: Path, checkpoints: Path) -> dict[str, Any]:
    """examples/dataprep-run.yaml, pointed at local files and the simulated nodes."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = body["spec"]
    spec["params"].update(
        {
            "video_uri": str(video),
            "output_uri": f"file://{out}",
            "mode": "grid",
            "crop_size": 120,
            "frame_stride": 5,
            "chunk_size": 32,
            "shard_size": 256,
        }
    )
    spec["checkpoint"]["uri"] = f"file://{checkpoints}"
    spec["image"] = "respawn:demo"  # the simulator runs the installed runtime
    spec["resources"] = {}
    spec.pop("serviceAccountName", None)
    spec["terminationGracePeriodSeconds"] = 15
    return body


DEMO_MARKER = ".respawn-demo"
"""A file the demo leaves in its folder: only a folder holding it is emptied by a later demo."""


def prepare_folder(work: Path) -> str | None:
    """Make `work` an empty demo folder; never delete what the demo did not create.

    A missing or empty folder is used; a folder that a demo made before (it holds the
    marker) is emptied; anything else is refused with a message (None: ready)."""
    if work.exists() and not work.is_dir():
        return f"{work} is a file, not a folder; give --dir a folder"
    if work.is_dir() and any(work.iterdir()):
        if not (work / DEMO_MARKER).is_file():
            return (
                f"{work} is not empty and is not a demo folder; the demo deletes its folder's contents "
                "when it starts, so give --dir a new or empty folder"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / DEMO_MARKER).write_text("made by respawn-demo: the next demo in this folder empties it\n")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="respawn-demo", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dir",
        default=".respawn/demo",
        help="where everything goes: a new or empty folder, or one an earlier demo made (emptied)",
    )
    ap.add_argument(
        "--frames", type=int, default=None, help="length of the generated video (default 3000; 1200 with --fanout)"
    )
    ap.add_argument(
        "--fanout",
        type=int,
        default=0,
        metavar="N",
        help="run examples/fanout-run.yaml over N generated videos instead (one child run per video)",
    )
    ap.add_argument("--preempt-at", default="extract_frames", help="preempt the pod while this step runs")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the API emulator and the operator running after the demo, for kubectl (Ctrl-C ends it)",
    )
    args = ap.parse_args(argv)
    if args.fanout < 0 or args.fanout > 50:
        ap.error("--fanout: give 1 to 50 videos")
    example = FANOUT_EXAMPLE if args.fanout else EXAMPLE
    if not example.is_file():
        # Installed from a wheel: the demo applies the repository's own example manifest,
        # as a user would, and a wheel does not carry examples/ (issue 13: demo or wheel).
        print(
            f"respawn-demo: {example} not found: the demo applies the examples/ manifests of a checkout "
            "of the Respawn repository; run it there (scripts/demo.sh, or respawn-demo from its .venv)",
            file=sys.stderr,
        )
        return 2
    args.frames = args.frames or (1200 if args.fanout else 3000)
    if args.frames < 1:
        ap.error("--frames: give at least 1")
    work = Path(args.dir).resolve()
    problem = prepare_folder(work)
    if problem:
        raise SystemExit(f"respawn-demo: {problem}")
    started = time.monotonic()

    videos = [
        Path(make_video(work / f"video{i or ''}.avi", frames=args.frames, width=480, height=360, fourcc="MJPG"))
        for i in range(max(1, args.fanout))
    ]
    video = videos[0]
    say(
        f"Generated {len(videos)} videos in {work} ({args.frames} frames each, 480x360, MJPG)."
        if args.fanout
        else f"Generated {video} ({args.frames} frames, 480x360, MJPG)."
    )

    api = ApiServerThread()
    api.start()
    kubeconfig = api.write_kubeconfig(str(work / "kubeconfig"))
    api.create(build_crd())
    for manifest in runner_rbac("default"):  # what the chart gives pipeline pods
        api.create(manifest)
    sim = PodSim.attached(api, work_dir=str(work / "pods"))
    sim.start()
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "RESPAWN_METRICS_PORT": "0",
        "RESPAWN_RUNNER_SERVICE_ACCOUNT": "respawn-runner",
        "RESPAWN_RESYNC_SECONDS": "2",
        "RESPAWN_DEFAULT_IMAGE": "respawn:demo",
    }
    op_log = open(work / "operator.log", "wb")
    bin_dir = Path(sys.executable).parent
    operator = subprocess.Popen(
        [str(bin_dir / "respawn-operator"), "--standalone", "-A"], env=env, stdout=op_log, stderr=subprocess.STDOUT
    )
    say(f"API emulator at {api.url}; operator and pod simulator started (nodes: {', '.join(sim.nodes)}).")
    say(f"  kubectl works too: kubectl --kubeconfig {kubeconfig} get pipelineruns")
    try:
        if args.fanout:
            code = run_fanout_demo(api, sim, work, videos, args, started)
        else:
            code = run_demo(api, sim, work, video, args, started)
        if args.keep:
            keep_running(kubeconfig)
        return code
    except WaitTimeout as e:
        raise SystemExit(f"demo: {e}") from None
    finally:
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
        sim.stop()
        api.stop()


def keep_running(kubeconfig: str) -> None:
    """Leave everything up until Ctrl-C (or SIGTERM), for looking around with kubectl."""
    import signal
    import threading

    stop = threading.Event()
    # Both explicitly: a shell that starts the demo in the background hands it SIGINT
    # ignored, and Python then leaves it so (no KeyboardInterrupt would ever come).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    say(
        "\nStill running (--keep): the emulator, the operator and the pod simulator. Try:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        "  kubectl get pipelineruns,jobs,pods,nodes\n"
        "  kubectl describe pipelinerun dataprep-video-42\n"
        "  kubectl respawn describe dataprep-video-42\n"
        "Ctrl-C stops it."
    )
    stop.wait()
    say("Stopped.")


def run_demo(
    api: ApiServerThread, sim: PodSim, work: Path, video: Path, args: argparse.Namespace, started: float
) -> int:
    out, checkpoints = work / "dataset", work / "checkpoints"
    body = load_example(video, out, checkpoints)
    name = body["metadata"]["name"]
    api.create(body, namespace=NS)
    say(f"\nApplied {EXAMPLE.relative_to(REPO)} as PipelineRun {name}:\n")
    table = Table(api)

    def status() -> dict[str, Any]:
        return api.get("pipelineruns", name, NS).get("status") or {}

    def watch_until(pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            table.poll()
            st = status()
            if st.get("phase") == "Failed":
                raise SystemExit(f"demo: the run failed: {st.get('message')}")
            return st if pred(st) else None

        return wait_for(check, timeout, what, interval=0.1)

    st = watch_until(
        lambda st: (
            (st.get("currentStep") == args.preempt_at and st.get("phase") == "Running")
            or st.get("phase") == "Succeeded"
        ),
        90,
        f"step {args.preempt_at} to run",
    )
    uid = api.get("pipelineruns", name, NS)["metadata"]["uid"]

    def pod_in_the_step() -> dict[str, Any] | None:
        """The running pod if it is still inside the step (its own progress report says so)."""
        table.poll()
        for p in api.list("pods", NS, label_selector=f"respawn.dev/run-uid={uid}"):
            report = json.loads((p["metadata"].get("annotations") or {}).get(PROGRESS_ANNOTATION) or "{}")
            if p["status"].get("phase") == "Running" and report.get("currentStep") == args.preempt_at:
                return p
        return None

    def in_step_or_past() -> dict[str, Any] | str | None:
        pod = pod_in_the_step()
        if pod is not None:
            return pod
        return (
            "past"
            if status().get("currentStep") not in (None, args.preempt_at) or status().get("phase") == "Succeeded"
            else None
        )

    found = None
    if st.get("phase") != "Succeeded":
        # The pod's own report is fresher than the run's status: preempt the moment it says
        # it is in the step (SIGTERM then commits the progress made so far).
        seen = wait_for(in_step_or_past, 60, f"the pod to report {args.preempt_at}", interval=0.02)
        found = seen if isinstance(seen, dict) else None
    if found is None:
        say(
            f"\n>>> {args.preempt_at} ended before the preemption could land in it (the video is short): "
            "no preemption this time; give --frames more frames to see one.\n"
        )
    else:
        reclaim(api, sim, found, lambda: watch_until(attempt_ended(1), 60, "the operator to see attempt 1 end"))
    final = watch_until(lambda st: st.get("phase") == "Succeeded", 120, "the run to succeed")
    last_pod = final["attempts"][-1].get("pod")
    continued = resumed_steps(sim.log(last_pod, NS)) if last_pod else []
    return report(final, body["spec"], out, started, continued, preempted=found is not None)


def attempt_ended(attempt: int) -> Callable[[dict[str, Any]], bool]:
    """A status predicate: the run's attempt `attempt` has an outcome."""
    return lambda st: any(a.get("attempt") == attempt and a.get("outcome") for a in st.get("attempts") or [])


def reclaim(api: ApiServerThread, sim: PodSim, pod: dict[str, Any], until_ended: Callable[[], Any]) -> None:
    """A spot VM reclaim: the node takes no new pods, its pod gets SIGTERM and its grace
    period; once the operator has seen the attempt end (`until_ended`), the node leaves
    the cluster and the node pool adds a new one."""
    name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
    say(f"\n>>> Spot node {node} is reclaimed: pod {name} gets DisruptionTarget (TerminationByKubelet) and SIGTERM.\n")
    api.patch("nodes", node, {"spec": {"unschedulable": True}}, namespace=None)  # GKE taints a node going down
    sim.preempt(name, NS, reason="TerminationByKubelet", grace=15, wait=False)
    until_ended()
    sim.lose_node(node)
    fresh = replacement_name(sim, node)
    sim.add_node(SimNode.spot(fresh))
    say(f"\n>>> Node {node} left the cluster; a new spot node {fresh} joined the pool.\n")


def load_fanout_example(videos: list[Path], out: Path, checkpoints: Path) -> dict[str, Any]:
    """examples/fanout-run.yaml over local videos: each item writes its dataset to out/<item key>."""
    body: dict[str, Any] = yaml.safe_load(FANOUT_EXAMPLE.read_text())
    spec = body["spec"]
    spec["params"].update(
        {
            "output_uri": f"file://{out}/$(item.key)",
            "crop_size": 120,
            "frame_stride": 5,
            "chunk_size": 32,
            "shard_size": 256,
        }
    )
    spec["foreach"]["items"] = [str(v) for v in videos]
    spec["parallelism"] = 2
    spec["checkpoint"]["uri"] = f"file://{checkpoints}"
    spec["image"] = "respawn:demo"
    spec["terminationGracePeriodSeconds"] = 15
    return body


def run_fanout_demo(
    api: ApiServerThread, sim: PodSim, work: Path, videos: list[Path], args: argparse.Namespace, started: float
) -> int:
    """One parent over the videos, two at a time; one item's pod is reclaimed mid-step."""
    from respawn_operator.fanout import item_key

    out = work / "datasets"
    body = load_fanout_example(videos, out, work / "checkpoints")
    name = body["metadata"]["name"]
    api.create(body, namespace=NS)
    say(
        f"\nApplied {FANOUT_EXAMPLE.relative_to(REPO)} as PipelineRun {name} over {len(videos)} videos, "
        f"{body['spec']['parallelism']} at a time (one child run per video):\n"
    )
    table = Table(api)

    def parent() -> dict[str, Any]:
        st: dict[str, Any] = api.get("pipelineruns", name, NS).get("status") or {}
        if st.get("phase") == "Failed":
            raise SystemExit(f"demo: the run failed: {st.get('message')}")
        return st

    def pod_in_the_step() -> dict[str, Any] | str | None:
        table.poll()
        if parent().get("phase") == "Succeeded":
            return "done"
        for p in api.list("pods", NS):
            report = json.loads((p["metadata"].get("annotations") or {}).get(PROGRESS_ANNOTATION) or "{}")
            if p["status"].get("phase") == "Running" and report.get("currentStep") == args.preempt_at:
                return p
        return None

    seen = wait_for(pod_in_the_step, 120, f"an item's pod to report {args.preempt_at}", interval=0.02)
    hit: str | None = None
    if isinstance(seen, dict):
        hit = seen["metadata"]["annotations"][ANNOTATION_RUN_NAME]

        def ended() -> Any:
            def check() -> bool:
                table.poll()
                child = api.get("pipelineruns", str(hit), NS)
                return attempt_ended(1)(child.get("status") or {})

            return wait_for(check, 60, "the operator to see the item's attempt 1 end", interval=0.1)

        reclaim(api, sim, seen, ended)

    def done() -> dict[str, Any] | None:
        table.poll()
        st = parent()
        return st if st.get("phase") == "Succeeded" else None

    final = wait_for(done, 300, "the fan-out to succeed", interval=0.1)
    items = final.get("items") or {}
    say(f"\nItems: {items.get('succeeded')}/{items.get('total')} succeeded, {items.get('failed', 0)} failed.")
    good = 0
    for video in videos:
        dataset = out / item_key(str(video))
        manifest = dataset / "manifest.jsonl"
        lines = manifest.read_text().count("\n") if manifest.exists() else 0
        good += lines > 0
        say(f"  {video.name} -> {dataset}  ({lines} crops)")
    if hit:
        child = api.get("pipelineruns", hit, NS).get("status") or {}
        last = (child.get("attempts") or [{}])[-1]
        say(
            f"Item {hit} was preempted and attempt {last.get('attempt')} resumed after "
            f"'{last.get('resumedFrom')}'; the other items never noticed."
        )
    say(f"Preemptions: {final.get('preemptions', 0)}; done in {time.monotonic() - started:.0f}s.")
    return 0 if good == len(videos) else 1


def replacement_name(sim: PodSim, gone: str) -> str:
    """The next free name in the reclaimed node's pool (spot-1 gone, spot-1 and spot-2 taken: spot-3)."""
    pool = gone.rsplit("-", 1)[0]
    n = 1
    while f"{pool}-{n}" in sim.nodes or f"{pool}-{n}" == gone:
        n += 1
    return f"{pool}-{n}"


def resumed_steps(log: str) -> list[str]:
    """Steps the runtime started from saved intra-step progress (its JSON event log)."""
    found = []
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "step_start" and event.get("resumed"):
            found.append(event["step"])
    return found


def steps_by_attempt(st: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, int]]:
    """Which attempt ran each step, from the checkpoint (its tombstone keeps the summary)."""
    from pipeline_runtime.checkpoint import RunLog
    from pipeline_runtime.cli import inspect_run
    from pipeline_runtime.storage import open_store

    runlog = RunLog(open_store(spec["checkpoint"]["uri"]), spec.get("tenant") or "default", st["runId"])
    info = inspect_run(runlog)
    summary = info["steps_summary"] or {}
    return [(step, summary[step].get("attempt")) for step in info["completed_steps"] or []]


def report(
    st: dict[str, Any], spec: dict[str, Any], out: Path, started: float, continued: list[str], preempted: bool = True
) -> int:
    """Print the outcome; 0 when the dataset is there and, if a pod was preempted, a later attempt resumed."""
    say("\nAttempts:")
    for a in st.get("attempts", []):
        note = f", resumed after step {a['resumedFrom']}" if a.get("resumedFrom") else ""
        say(
            f"  #{a['attempt']} on {a.get('node')} (spot: {a.get('spot')}): {a.get('outcome')}"
            f" ({a.get('reason')}){note}"
        )
    ran = steps_by_attempt(st, spec)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().count("\n") if manifest.exists() else 0
    shards = sorted(p.name for p in out.glob("shard-*"))
    say(f"\nDataset: {out}  ({lines} crops in {len(shards)} shards + manifest.jsonl)")
    last = st["attempts"][-1]
    resumed = last.get("resumedFrom")
    skipped = [s for s, a in ran if a != last["attempt"]]
    again = [s for s, a in ran if a == last["attempt"]]
    if resumed:
        say(
            f"Attempt {last['attempt']} resumed after '{resumed}': it skipped "
            f"{', '.join(skipped) or 'nothing'} (done by earlier attempts) and ran "
            f"{', '.join(again)}."
        )
    for step_name in continued:
        say(f"{step_name} continued from the progress saved at SIGTERM, not from its start.")
    say(
        f"Preemptions: {st.get('preemptions')}, failures: {st.get('failures')}; "
        f"done in {time.monotonic() - started:.0f}s."
    )
    return 0 if lines and (not preempted or (resumed and skipped)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""A pod simulator: the scheduler, the Job controller and the kubelet, over HTTP.

`PodSim` talks to a Kubernetes API (our emulator, `respawn_local.apiserver`) like the
real control plane does: it watches Jobs, Pods and Nodes, creates pods for Jobs,
binds them to simulated nodes, and runs each pod's first container as a real
subprocess (so `pipeline-runtime run ...` really runs, gets SIGTERM, writes its
termination message). It also performs the disruptions Kubernetes performs:
spot node shutdown, scheduler preemption, eviction, user deletion, node loss.

It runs in a background thread with its own event loop; every public method is
synchronous and thread-safe. What is simplified is listed in docs/emulator.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from pipeline_runtime.contracts import ENV_SERVICEACCOUNT_DIR
from respawn_local.apiserver import now_rfc3339, parse_rfc3339

Obj = dict[str, Any]

USER_AGENT = "respawn-podsim/0.1"
LOG_ANNOTATION = "respawn.dev/sim-log"
SPOT_LABEL = "cloud.google.com/gke-spot"
NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"

# Environment a container gets from the host: just enough to run Python tools.
_HOST_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT", "PYTHONDONTWRITEBYTECODE")


API_RETRY_SECONDS = 300.0
"""How long the simulator keeps retrying a request while the API server is down."""


@dataclasses.dataclass
class SimNode:
    """A simulated node."""

    name: str
    """Node name."""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    """Node labels (matched against nodeSelector/affinity)."""
    taints: list[Obj] = dataclasses.field(default_factory=list)
    """Node taints ({key, value, effect}), matched against tolerations."""

    @classmethod
    def spot(cls, name: str) -> SimNode:
        """A GKE spot node: labelled and tainted like GKE does."""
        return cls(name, {SPOT_LABEL: "true"}, [{"key": SPOT_LABEL, "value": "true", "effect": "NoSchedule"}])

    @classmethod
    def ondemand(cls, name: str) -> SimNode:
        """A regular node."""
        return cls(name)


def default_nodes() -> list[SimNode]:
    """spot-1, spot-2 (spot label and taint) and ondemand-1."""
    return [SimNode.spot("spot-1"), SimNode.spot("spot-2"), SimNode.ondemand("ondemand-1")]


# ---------------------------------------------------------------------------
# Pure helpers: scheduling predicates and Job bookkeeping
# ---------------------------------------------------------------------------


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    """Whether one of `tolerations` tolerates `taint` (Kubernetes' matching rules)."""
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        op = t.get("operator", "Equal")
        if not t.get("key"):
            if op == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if op == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expr_ok(labels: dict[str, str], expr: Obj) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if key is None:  # no label lacks a key: only the negative operators hold
        return op in ("NotIn", "DoesNotExist")
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            v = int(labels[key])
        except (KeyError, ValueError):
            return False
        return v > int(values[0]) if op == "Gt" else v < int(values[0])
    return False


def fits(pod_spec: Obj, node: SimNode) -> bool:
    """nodeSelector, required node affinity, and NoSchedule/NoExecute taints."""
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if node.labels.get(k) != v:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_expr_ok(node.labels, e) for e in term.get("matchExpressions") or []) for term in terms):
        return False
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
            pod_spec.get("tolerations") or [], taint
        ):
            return False
    return True


def _cond(obj: Obj, ctype: str) -> Obj | None:
    conds: list[Obj] = (obj.get("status") or {}).get("conditions") or []
    for c in conds:
        if c.get("type") == ctype:
            return c
    return None


def _is_true(obj: Obj, ctype: str) -> bool:
    c = _cond(obj, ctype)
    return c is not None and c.get("status") == "True"


def set_condition(status: Obj, ctype: str, cstatus: str, reason: str = "", message: str = "") -> None:
    """Set a condition in a status dict; lastTransitionTime changes only when status does."""
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != cstatus:
                c["lastTransitionTime"] = now_rfc3339()
            c["status"] = cstatus
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            return
    cond: Obj = {"type": ctype, "status": cstatus, "lastTransitionTime": now_rfc3339()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    conds.append(cond)


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            uid: str | None = ref.get("uid")
            return uid
    return None


def exit_code(returncode: int) -> int:
    """A container runtime's exit code: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Proc:
    pod_uid: str
    namespace: str
    name: str
    node: str
    process: asyncio.subprocess.Process
    log_path: str
    termination_log: str
    started_at: str
    policy: str
    container: str
    image: str
    stopping: bool = False
    detached: bool = False
    status_reason: str | None = None
    status_message: str | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class PodSim:
    """Scheduler + Job controller + kubelet for simulated nodes, in a background thread.

    `api_url` is the API server's base URL; `token` the bearer token the simulator
    itself uses (it plays kubelet and the Job controller: the emulator's admin token),
    `ca_file` the CA of an https server. Like kubelet, it mounts into each pod a token
    of the pod's ServiceAccount bound to the pod (TokenRequest API) plus the CA, in a
    folder named by RESPAWN_SERVICEACCOUNT_DIR. Subprocess logs, termination
    logs and working dirs go under `work_dir` (a temp dir by default). Containers
    without a `command` run `default_command` (the image's entrypoint). Containers
    inherit only PATH (venv bin first), HOME, LANG, TMPDIR and PYTHONPATH from this
    process, plus `extra_env`, then the pod's env.
    """

    def __init__(
        self,
        api_url: str,
        nodes: list[SimNode] | None = None,
        work_dir: str | None = None,
        default_command: tuple[str, ...] = ("pipeline-runtime",),
        extra_env: dict[str, str] | None = None,
        resync_seconds: float = 1.0,
        events: bool = True,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.ca_file = ca_file
        self.nodes: dict[str, SimNode] = {n.name: n for n in (nodes if nodes is not None else default_nodes())}
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="respawn-podsim-")
        self.default_command = tuple(default_command)
        self.extra_env = dict(extra_env or {})
        self.resync_seconds = resync_seconds
        self.events = events
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.node_objects: dict[tuple[str, str], Obj] = {}
        self.procs: dict[str, _Proc] = {}
        """Running container processes by pod uid."""
        self.orphans: list[_Proc] = []
        """Processes left running by `lose_node(..., keep_running=True)` (split brain)."""
        self.lost_nodes: set[str] = set()
        self._counted: dict[str, set[str]] = {}
        self._pending_creates: dict[str, int] = {}
        self._vanished: dict[str, list[Obj]] = {}
        self._job_counts: dict[str, dict[str, int]] = {}
        self._finished_jobs: set[str] = set()
        self._suspend_deleted: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._handled: set[str] = set()
        self._finalizing: set[str] = set()
        self._unschedulable: set[str] = set()
        self._deadline_wakes: dict[str, float] = {}
        """Pods with an active deadline ahead: when the loop is woken up for it."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._kick: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._synced: set[str] = set()
        self._stopping = False
        self.errors: list[str] = []
        self._freeze: list[Callable[[Obj], bool]] = []
        """Unexpected errors seen by the loops (tests can assert it stays empty)."""

    @classmethod
    def attached(cls, api: Any, **kwargs: Any) -> PodSim:
        """A simulator for an `ApiServerThread`, with its admin token and CA."""
        return cls(api.url, token=api.admin_token, ca_file=api.ca_file, **kwargs)

    # -- lifecycle (sync) ----------------------------------------------------

    def __enter__(self) -> PodSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Create the nodes, start watching, and return once the caches are synced."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart())
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._astop())
            loop.close()

        self._thread = threading.Thread(target=run, name="respawn-podsim", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        if failure:
            raise failure[0]
        self._wait_sync(lambda: self._synced >= {"jobs", "pods", "nodes"}, timeout, "podsim caches to sync")

    def stop(self) -> None:
        """Stop the loops and kill every process this simulator started (orphans too)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
            self._thread = None
        for proc in list(self.procs.values()) + self.orphans:
            _kill_group(proc.process.pid, signal.SIGKILL)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _call(self, coro: Any, timeout: float | None = 60) -> Any:
        assert self._loop is not None, "PodSim is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _wait_sync(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.02)

    # -- disruptions and helpers (sync, thread-safe) -------------------------------

    def preempt(
        self,
        pod: str,
        namespace: str = "default",
        reason: str = "TerminationByKubelet",
        grace: float = 15,
        message: str | None = None,
        wait: bool = True,
    ) -> concurrent.futures.Future[Any] | None:
        """Disrupt a running pod the way Kubernetes does.

        reason="TerminationByKubelet" (default, GKE spot node shutdown): DisruptionTarget
        condition, SIGTERM, up to `grace` seconds, SIGKILL; the pod ends Failed with
        status.reason "Terminated" and the node-shutdown message, and stays.
        reason="PreemptionByScheduler": DisruptionTarget condition, then a graceful
        delete with `grace` (SIGTERM, grace, SIGKILL, pod removed).
        Other reasons: like TerminationByKubelet but without status.reason.
        wait=True blocks until done; wait=False returns a Future.
        """
        fut = asyncio.run_coroutine_threadsafe(self._preempt(namespace, pod, reason, grace, message), self._loop)  # type: ignore[arg-type]
        if wait:
            fut.result(grace + 60)
            return None
        return fut

    def evict(self, pod: str, namespace: str = "default", grace: int | None = None, wait: bool = True) -> None:
        """POST the policy/v1 Eviction subresource (like `kubectl drain`), then wait until the pod is gone."""
        self._call(self._evict(namespace, pod, grace, wait), None)

    def delete_pod(self, pod: str, namespace: str = "default", grace: int | None = None, wait: bool = True) -> None:
        """Delete a pod like a user would (graceful: SIGTERM, grace, pod removed)."""
        self._call(self._delete_pod(namespace, pod, grace, wait), None)

    def lose_node(self, node: str, keep_running: bool = False) -> list[str]:
        """The node vanishes: its processes are SIGKILLed (or kept running, split brain),
        the Node is deleted, its pods get DisruptionTarget DeletionByTaintManager, phase
        Failed reason NodeLost, and are deleted. Returns the affected pod names."""
        return self._call(self._lose_node(node, keep_running))  # type: ignore[no-any-return]

    def add_node(self, node: SimNode) -> None:
        """Add (or bring back) a node."""
        self._call(self._add_node(node))

    def freeze_starts(self, match: Callable[[Obj], bool]) -> None:
        """Start the container of every pod that `match` accepts stopped (SIGSTOP before
        its command runs), so a test can disrupt it at a known moment, however fast the
        command would have been. A stopped process ignores SIGTERM until `thaw`; SIGKILL
        (the end of a grace period) still ends it."""
        self._freeze.append(match)

    def thaw(self, pod: str, namespace: str = "default") -> None:
        """SIGCONT a pod's process group (see `freeze_starts`)."""
        proc = self.process(pod, namespace)
        if proc is not None:
            _kill_group(proc.process.pid, signal.SIGCONT)

    def process(self, pod: str, namespace: str = "default") -> _Proc | None:
        """The running (or orphaned) process of a pod, if any."""
        for p in list(self.procs.values()) + self.orphans:
            if p.name == pod and p.namespace == namespace:
                return p
        return None

    def log(self, pod: str, namespace: str = "default") -> str:
        """The output of a pod's container so far ('' if it never ran)."""
        path = os.path.join(self.work_dir, namespace, pod, "output.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for(self, pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        """Poll `pred` until true or raise TimeoutError."""
        self._wait_sync(pred, timeout, what)

    # -- HTTP --------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        ok404: bool = False,
    ) -> Obj | None:
        assert self._session is not None
        data = json.dumps(body) if body is not None else None
        # Like a kubelet, keep trying while the API server is away (a pod's end must
        # reach the API whenever it comes back), within API_RETRY_SECONDS.
        deadline = time.monotonic() + API_RETRY_SECONDS
        attempt = 0
        while True:
            attempt += 1
            last_try = time.monotonic() > deadline or self._stopping
            try:
                async with self._session.request(
                    method, self.api_url + path, data=data, params=params, headers={"Content-Type": content_type}
                ) as resp:
                    text = await resp.text()
                    if resp.status == 404 and ok404:
                        return None
                    if resp.status in (429, 500, 503) and not last_try:
                        await asyncio.sleep(min(1.0, 0.1 * attempt))
                        continue
                    if resp.status >= 400:
                        raise _HttpError(resp.status, text)
                    return json.loads(text) if text else {}
            except (TimeoutError, aiohttp.ClientConnectionError):
                if last_try:
                    raise
                await asyncio.sleep(min(1.0, 0.1 * attempt))

    @staticmethod
    def _path(kind: str, ns: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = {"pods": "/api/v1", "nodes": "/api/v1", "jobs": "/apis/batch/v1"}[kind]
        p = f"{base}/namespaces/{ns}/{kind}" if ns else f"{base}/{kind}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    async def _update_status(
        self, kind: str, ns: str, name: str, mutate: Callable[[Obj], bool | None], cached: Obj | None = None
    ) -> Obj | None:
        """GET, mutate status in place, PUT /status with the resourceVersion; retry on 409.

        With `cached`, first try the mutation on it: no change means no request at all.
        """
        if cached is not None:
            trial = copy.deepcopy(cached)
            before = copy.deepcopy(trial.get("status"))
            trial.setdefault("status", {})
            if mutate(trial) is False or trial["status"] == before:
                return cached
        for _ in range(10):
            obj = await self._request("GET", self._path(kind, ns, name), ok404=True)
            if obj is None:
                return None
            before = copy.deepcopy(obj.get("status"))
            obj.setdefault("status", {})
            if mutate(obj) is False or obj["status"] == before:
                return obj
            try:
                new = await self._request("PUT", self._path(kind, ns, name, "status"), obj)
                self._remember(kind, new)
                return new
            except _HttpError as e:
                if e.status == 409:
                    continue
                if e.status == 404:
                    return None
                raise
        return None

    def _remember(self, kind: str, obj: Obj | None) -> None:
        """Put our own write's result in the cache unless the watch already has newer."""
        if obj is None or kind not in ("jobs", "pods"):
            return
        cache = self.jobs if kind == "jobs" else self.pods
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        cur = cache.get(key)
        if cur is None or (
            cur["metadata"]["uid"] == obj["metadata"]["uid"]
            and int(cur["metadata"]["resourceVersion"]) < int(obj["metadata"]["resourceVersion"])
        ):
            cache[key] = obj

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # -- loops ---------------------------------------------------------------------

    async def _astart(self) -> None:
        headers = {"User-Agent": USER_AGENT, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self.ca_file)) if self.ca_file else None
        self._session = aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
        )
        self._kick = asyncio.Event()
        for node in self.nodes.values():
            await self._add_node(node)
        for kind in ("jobs", "pods", "nodes"):
            self._tasks.append(asyncio.create_task(self._informer(kind)))
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))

    async def _astop(self) -> None:
        # Python 3.11's wait_for can swallow a cancellation; the flag ends the loops anyway.
        self._stopping = True
        if self._kick is not None:
            self._kick.set()
        for proc in list(self.procs.values()):
            proc.detached = True
            _kill_group(proc.process.pid, signal.SIGKILL)
        tasks = self._tasks + list(self._bg)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()

    async def _add_node(self, node: SimNode) -> None:
        self.nodes[node.name] = node
        self.lost_nodes.discard(node.name)
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **node.labels,
                },
            },
            "spec": {"taints": copy.deepcopy(node.taints)} if node.taints else {},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastTransitionTime": now_rfc3339(),
                        "lastHeartbeatTime": now_rfc3339(),
                    }
                ],
                # Every field a kubelet reports (clients such as `kubernetes` 37 refuse a partial one).
                "nodeInfo": {
                    "kubeletVersion": "v1.32.0-podsim",
                    "kubeProxyVersion": "v1.32.0-podsim",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "osImage": "podsim",
                    "kernelVersion": os.uname().release,
                    "containerRuntimeVersion": "podsim://1",
                    "machineID": hashlib.md5(node.name.encode()).hexdigest(),
                    "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node.name)),
                    "bootID": str(uuid.uuid4()),
                },
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "addresses": [
                    {"type": "InternalIP", "address": f"10.128.0.{len(self.nodes) + 1}"},
                    {"type": "Hostname", "address": node.name},
                ],
            },
        }
        try:
            created = await self._request("POST", "/api/v1/nodes", body)
        except _HttpError as e:
            if e.status != 409:
                raise
            created = await self._request("GET", f"/api/v1/nodes/{node.name}")
        # The kubelet's heartbeat lease (kubectl describe node reads it); owned by the Node.
        assert created is not None
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": node.name,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": created["metadata"]["uid"]}
                ],
            },
            "spec": {
                "holderIdentity": node.name,
                "leaseDurationSeconds": 40,
                "renewTime": now_rfc3339().replace("Z", ".000000Z"),
            },
        }
        try:
            await self._request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        except _HttpError as e:
            if e.status not in (404, 409):
                raise
        if self._kick:
            self._kick.set()

    async def _informer(self, kind: str) -> None:
        cache = {"jobs": self.jobs, "pods": self.pods, "nodes": self.node_objects}[kind]
        path = self._path(kind, None)
        assert self._session is not None
        while not self._stopping:
            try:
                listing = await self._request("GET", path)
                assert listing is not None
                cache.clear()
                for o in listing.get("items", []):
                    cache[(o["metadata"].get("namespace", ""), o["metadata"]["name"])] = o
                rv = listing["metadata"]["resourceVersion"]
                self._synced.add(kind)
                self._kick.set()  # type: ignore[union-attr]
                relist = False
                while not relist:
                    params = {
                        "watch": "true",
                        "resourceVersion": rv,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "300",
                    }
                    async with self._session.get(self.api_url + path, params=params) as resp:
                        if resp.status != 200:
                            relist = True
                            break
                        while True:
                            line = await resp.content.readline()
                            if not line:
                                break
                            ev = json.loads(line)
                            obj = ev["object"]
                            if ev["type"] == "ERROR":
                                relist = True
                                break
                            rv = obj["metadata"]["resourceVersion"]
                            if ev["type"] == "BOOKMARK":
                                continue
                            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                            if ev["type"] == "DELETED":
                                cache.pop(key, None)
                                if kind == "pods":
                                    self._on_pod_gone(obj)
                            else:
                                cache[key] = obj
                            self._kick.set()  # type: ignore[union-attr]
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.2)
            except Exception as e:  # keep watching whatever happens
                self.errors.append(f"{kind} informer: {e!r}")
                await asyncio.sleep(0.2)

    async def _reconcile_loop(self) -> None:
        assert self._kick is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=self.resync_seconds)
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._kick.clear()
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.2)
            except Exception as e:
                self.errors.append(f"reconcile: {e!r}")
                await asyncio.sleep(0.2)

    async def _reconcile(self) -> None:
        # Each object on its own, like the real controllers' work queues: one that fails
        # (a Job the API refuses pods for) is noted and retried next pass, never a stall.
        for kind, sync, objs in (
            ("job", self._sync_job, list(self.jobs.values())),
            ("pod", self._sync_pod, list(self.pods.values())),
        ):
            for obj in objs:
                try:
                    await sync(obj)
                except (TimeoutError, asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                    raise
                except Exception as e:
                    meta = obj.get("metadata") or {}
                    self.errors.append(f"{kind} {meta.get('namespace')}/{meta.get('name')}: {e!r}")

    # -- Job controller ------------------------------------------------------------

    def _on_pod_gone(self, pod: Obj) -> None:
        # A job's pod that disappears without being counted still counts (the real
        # controller guarantees it with a finalizer): as failed unless it succeeded.
        uid = pod["metadata"]["uid"]
        proc = self.procs.get(uid)
        if proc is not None and not proc.stopping and not proc.detached:
            # Force-deleted while running: the kubelet stops the container anyway.
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            self._spawn(self._stop_process(proc, grace))
        job_uid = _controller_uid(pod)
        if job_uid is None:
            return
        counted = self._counted.setdefault(job_uid, set())
        if uid not in counted:
            self._vanished.setdefault(job_uid, []).append(pod)

    async def _sync_job(self, job: Obj) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if meta.get("deletionTimestamp"):
            return
        status = job.get("status") or {}
        finished = _is_true(job, "Complete") or _is_true(job, "Failed") or uid in self._finished_jobs
        # Our own counts are authoritative: the cached status may predate our last write.
        counts = self._job_counts.setdefault(
            uid, {"failed": status.get("failed", 0), "succeeded": status.get("succeeded", 0)}
        )
        owned = [p for p in self.pods.values() if _controller_uid(p) == uid]
        counted = self._counted.setdefault(uid, set())
        new_failed, new_succeeded = 0, 0
        only_failed = spec.get("podReplacementPolicy") == "Failed"
        for p in owned:
            puid = p["metadata"]["uid"]
            if puid in self._suspend_deleted:
                counted.add(puid)  # pods stopped by a suspension are not failures (KEP-2232)
            if (
                not only_failed
                and puid not in counted
                and p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") != "Succeeded"
            ):
                # Like the real controller's isPodFailed: unless only Failed pods are
                # replaced, a terminating pod already counts as failed.
                counted.add(puid)
                new_failed += 1
            if _terminal(p) and puid not in counted:
                counted.add(puid)
                if p["status"]["phase"] == "Succeeded":
                    new_succeeded += 1
                else:
                    new_failed += 1
        for p in self._vanished.pop(uid, []):
            puid = p["metadata"]["uid"]
            if puid not in counted and puid not in self._suspend_deleted:
                counted.add(puid)
                if (p.get("status") or {}).get("phase") == "Succeeded":
                    new_succeeded += 1
                else:
                    new_failed += 1
        active = [p for p in owned if not _terminal(p) and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in owned if not _terminal(p) and p["metadata"].get("deletionTimestamp")]
        counts["failed"] += new_failed
        counts["succeeded"] += new_succeeded
        failed, succeeded = counts["failed"], counts["succeeded"]
        if finished:
            if new_failed or new_succeeded:
                await self._patch_job_status(
                    ns, name, {"failed": failed or None, "succeeded": succeeded or None, "active": len(active) or None}
                )
            return

        def is_now(s: Obj) -> None:
            s["failed"], s["succeeded"] = failed, succeeded
            s["active"] = len(active) + self._pending_creates.get(uid, 0)
            s["ready"] = sum(1 for p in active if _is_true(p, "Ready"))
            s["terminating"] = len(terminating)
            for k in ("failed", "succeeded", "active"):
                if not s[k]:
                    s.pop(k)

        # Suspend: stop the active pods and wait; resuming restarts the clock.
        if spec.get("suspend"):
            for p in active:
                self._suspend_deleted.add(p["metadata"]["uid"])
                await self._request("DELETE", self._path("pods", ns, p["metadata"]["name"]), ok404=True)

            def suspend(j: Obj) -> None:
                s = j["status"]
                is_now(s)
                s.pop("active", None)
                s.pop("startTime", None)
                set_condition(s, "Suspended", "True", "JobSuspended", "Job suspended")

            await self._update_status("jobs", ns, name, suspend, job)
            return

        reason = message = None
        if succeeded >= spec.get("completions", 1):
            reason = "Complete"
        elif failed > spec.get("backoffLimit", 6):
            reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        elif spec.get("activeDeadlineSeconds") is not None and status.get("startTime"):
            elapsed = time.time() - parse_rfc3339(status["startTime"]).timestamp()
            if elapsed >= spec["activeDeadlineSeconds"]:
                reason, message = "DeadlineExceeded", "Job was active longer than specified deadline"

        if reason is not None:
            self._finished_jobs.add(uid)
            if reason != "Complete":
                for p in active:
                    await self._request("DELETE", self._path("pods", ns, p["metadata"]["name"]), ok404=True)

            def finish(j: Obj) -> None:
                s = j["status"]
                is_now(s)
                s.pop("active", None)
                if reason == "Complete":
                    set_condition(
                        s,
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    )
                    set_condition(
                        s, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods"
                    )
                    s["completionTime"] = now_rfc3339()
                else:
                    set_condition(s, "FailureTarget", "True", reason, message or "")
                    set_condition(s, "Failed", "True", reason, message or "")

            await self._update_status("jobs", ns, name, finish, job)
            if reason == "Complete":
                self._event(job, "Completed", "Job completed", component="job-controller")
            else:
                self._event(job, reason, message or "", "Warning", component="job-controller")
            return

        wait_for_terminating = spec.get("podReplacementPolicy") == "Failed" and terminating
        if not active and not self._pending_creates.get(uid) and not wait_for_terminating:
            await self._create_job_pod(job)

        def running(j: Obj) -> None:
            s = j["status"]
            is_now(s)
            s.setdefault("startTime", now_rfc3339())
            if _cond(j, "Suspended") is not None:
                set_condition(s, "Suspended", "False", "JobResumed", "Job resumed")

        await self._update_status("jobs", ns, name, running, job)

    async def _patch_job_status(self, ns: str, name: str, fields: Obj) -> None:
        await self._request(
            "PATCH",
            self._path("jobs", ns, name, "status"),
            {"status": fields},
            content_type="application/merge-patch+json",
            ok404=True,
        )

    async def _create_job_pod(self, job: Obj) -> None:
        meta, template = job["metadata"], copy.deepcopy((job.get("spec") or {}).get("template") or {})
        uid = meta["uid"]
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update(
            {
                "job-name": meta["name"],
                "batch.kubernetes.io/job-name": meta["name"],
                "controller-uid": uid,
                "batch.kubernetes.io/controller-uid": uid,
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        self._pending_creates[uid] = self._pending_creates.get(uid, 0) + 1
        try:
            created = await self._request("POST", self._path("pods", meta["namespace"]), pod)
            self._remember("pods", created)
            if created is not None:
                self._event(
                    job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component="job-controller"
                )
        finally:
            self._pending_creates[uid] -= 1

    # -- scheduler + kubelet ---------------------------------------------------------

    async def _sync_pod(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        node = spec.get("nodeName")
        if meta.get("deletionTimestamp"):
            if node in self.nodes and node not in self.lost_nodes and uid not in self._finalizing:
                self._finalizing.add(uid)
                self._spawn(self._terminate(pod))
            return
        if not node:
            if (
                spec.get("schedulerName", "default-scheduler") == "default-scheduler"
                and not _terminal(pod)
                and not spec.get("schedulingGates")
            ):  # gated pods (e.g. by Kueue) wait
                await self._schedule(pod)
            return
        if node in self.nodes and node not in self.lost_nodes and uid not in self._handled and not _terminal(pod):
            self._handled.add(uid)
            await self._start(pod)
        elif uid in self.procs and not _terminal(pod):
            self._check_active_deadline(pod)

    def _check_active_deadline(self, pod: Obj) -> None:
        """Kubelet's active-deadline handler: once a pod has been active on its node (since
        ``status.startTime``) for ``spec.activeDeadlineSeconds``, stop it (SIGTERM, the
        pod's grace period, SIGKILL); the pod ends Failed with reason DeadlineExceeded and
        stays. Before that, wake the loop up at the deadline."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        deadline, started = spec.get("activeDeadlineSeconds"), (pod.get("status") or {}).get("startTime")
        proc = self.procs.get(meta["uid"])
        if deadline is None or not started or proc is None or proc.stopping:
            return
        due = parse_rfc3339(started).timestamp() + float(deadline)
        left = due - time.time()
        if left > 0:
            if self._deadline_wakes.get(meta["uid"]) != due:
                self._deadline_wakes[meta["uid"]] = due
                assert self._loop is not None and self._kick is not None
                self._loop.call_later(left + 0.01, self._kick.set)
            return
        self._deadline_wakes.pop(meta["uid"], None)
        proc.status_reason, proc.status_message = "DeadlineExceeded", DEADLINE_MESSAGE
        self._event(pod, "DeadlineExceeded", DEADLINE_MESSAGE, "Warning")
        self._spawn(self._stop_process(proc, float(spec.get("terminationGracePeriodSeconds", 30))))

    async def _schedule(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        candidates = [n for n in (self._live_node(name) for name in self.nodes) if n is not None and fits(spec, n)]
        if not candidates:
            if meta["uid"] not in self._unschedulable:
                self._unschedulable.add(meta["uid"])
                msg = f"0/{len(self.nodes)} nodes are available: no node matches the pod's node selector, affinity or tolerations."

                def unschedulable(p: Obj) -> None:
                    set_condition(p["status"], "PodScheduled", "False", "Unschedulable", msg)

                await self._update_status("pods", meta["namespace"], meta["name"], unschedulable)
                self._event(pod, "FailedScheduling", msg, "Warning", component="default-scheduler")
            return
        load = {n.name: 0 for n in candidates}
        for p in self.pods.values():
            n = (p.get("spec") or {}).get("nodeName")
            if n in load and not _terminal(p):
                load[n] += 1
        best = min(candidates, key=lambda n: (load[n.name], n.name))
        try:
            await self._request(
                "POST",
                self._path("pods", meta["namespace"], meta["name"], "binding"),
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": meta["name"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": best.name},
                },
            )
        except _HttpError as e:
            if e.status not in (404, 409):
                raise
            return
        self._event(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {best.name}",
            component="default-scheduler",
        )

    def _event(self, obj: Obj, reason: str, message: str, etype: str = "Normal", component: str = "kubelet") -> None:
        """Post a core/v1 Event about `obj` (fire and forget), as the real components do."""
        if not self.events:
            return
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{random.getrandbits(64):016x}", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": ns,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": "",
        }

        async def post() -> None:
            try:
                await self._request("POST", f"/api/v1/namespaces/{ns}/events", body)
            except Exception:
                pass  # events are best effort, as in kube

        self._spawn(post())

    def _live_node(self, name: str) -> SimNode | None:
        """The node as the API shows it (labels, taints, cordon), None if it cannot take pods."""
        if name in self.lost_nodes:
            return None
        obj = self.node_objects.get(("", name))
        if obj is None:
            return self.nodes[name]
        spec = obj.get("spec") or {}
        if spec.get("unschedulable"):
            return None  # cordoned (kubectl cordon / drain)
        return SimNode(name, dict(obj["metadata"].get("labels") or {}), list(spec.get("taints") or []))

    def _container_env(
        self, pod: Obj, container: Obj, termination_log: str, sa_dir: str | None = None
    ) -> dict[str, str]:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        venv_bin = os.path.dirname(sys.executable)
        env = {k: os.environ[k] for k in _HOST_ENV if k in os.environ}
        env["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        env["HOSTNAME"] = meta["name"]
        env.update(self.extra_env)
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
            "status.hostIP": "",
        }
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
            elif "valueFrom" in item:
                ref = (item["valueFrom"] or {}).get("fieldRef")
                if ref:
                    path = ref.get("fieldPath", "")
                    if path in fields:
                        env[item["name"]] = fields[path]
                    elif path.startswith("metadata.labels['"):
                        env[item["name"]] = (meta.get("labels") or {}).get(path[17:-2], "")
                    elif path.startswith("metadata.annotations['"):
                        env[item["name"]] = (meta.get("annotations") or {}).get(path[22:-2], "")
                # secretKeyRef / configMapKeyRef / resourceFieldRef: not simulated
            else:
                env[item["name"]] = ""
        env.update(
            {
                "RESPAWN_TERMINATION_LOG": termination_log,
                "RESPAWN_POD_NAME": meta["name"],
                "RESPAWN_POD_NAMESPACE": meta["namespace"],
                "RESPAWN_NODE_NAME": spec.get("nodeName", ""),
            }
        )
        if sa_dir is not None:
            env[ENV_SERVICEACCOUNT_DIR] = sa_dir
        if self.api_url.startswith("https://"):
            host, _, port = self.api_url[len("https://") :].rpartition(":")
            env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
        else:
            env["RESPAWN_KUBE_API"] = self.api_url  # in-cluster clients speak only https
        return env

    async def _mount_service_account(self, pod: Obj, pod_dir: str) -> str | None:
        """Like kubelet's projected volume: a token of the pod's ServiceAccount bound to the pod, and the CA."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if spec.get("automountServiceAccountToken") is False:
            return None
        sa = spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        try:
            answer = await self._request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body
            )
        except _HttpError as e:
            self.errors.append(f"token for pod {meta['namespace']}/{meta['name']} (ServiceAccount {sa}): {e}")
            return None
        folder = os.path.join(pod_dir, "serviceaccount")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "token"), "w") as f:
            f.write((answer or {}).get("status", {}).get("token", ""))
        with open(os.path.join(folder, "namespace"), "w") as f:
            f.write(meta["namespace"])
        if self.ca_file:
            shutil.copyfile(self.ca_file, os.path.join(folder, "ca.crt"))
        return folder

    async def _start(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        container = (spec.get("containers") or [{}])[0]
        pod_dir = os.path.join(self.work_dir, ns, name)
        os.makedirs(os.path.join(pod_dir, "work"), exist_ok=True)
        log_path = os.path.join(pod_dir, "output.log")
        term_path = os.path.join(pod_dir, "termination-log")
        open(term_path, "w").close()
        env = self._container_env(pod, container, term_path, await self._mount_service_account(pod, pod_dir))
        argv = list(container.get("command") or self.default_command) + [str(a) for a in container.get("args") or []]
        argv = [_expand(a, env) for a in argv]
        exe = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        if any(match(pod) for match in self._freeze):
            argv, exe = ["sh", "-c", 'kill -STOP $$; exec "$@"', "podsim-frozen", exe, *argv[1:]], "/bin/sh"
        await self._request(
            "PATCH",
            self._path("pods", ns, name),
            {"metadata": {"annotations": {LOG_ANNOTATION: log_path}}},
            content_type="application/merge-patch+json",
            ok404=True,
        )
        started = now_rfc3339()
        log = open(log_path, "ab")
        try:
            process = await asyncio.create_subprocess_exec(
                exe,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=os.path.join(pod_dir, "work"),
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            log.write(f"podsim: cannot start {argv!r}: {e}\n".encode())
            log.close()
            why = str(e)  # `e` is unbound once the except clause ends; the closure must not need it

            def cannot_start(p: Obj) -> None:
                s = p["status"]
                s["phase"] = "Failed"
                s["containerStatuses"] = [
                    {
                        "name": container.get("name", "main"),
                        "image": container.get("image", ""),
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {
                            "terminated": {
                                "exitCode": 128,
                                "reason": "StartError",
                                "message": why,
                                "startedAt": started,
                                "finishedAt": now_rfc3339(),
                            }
                        },
                    }
                ]

            await self._update_status("pods", ns, name, cannot_start)
            return
        log.close()
        proc = _Proc(
            uid,
            ns,
            name,
            spec.get("nodeName", ""),
            process,
            log_path,
            term_path,
            started,
            container.get("terminationMessagePolicy", "File"),
            container.get("name", "main"),
            container.get("image", ""),
        )
        self.procs[uid] = proc
        current = self.pods.get((ns, name))
        if current is None or current["metadata"]["uid"] != uid:
            self._spawn(
                self._stop_process(proc, float(spec.get("terminationGracePeriodSeconds", 30)))
            )  # deleted meanwhile
        node_idx = sorted(self.nodes).index(proc.node) + 1 if proc.node in self.nodes else 9

        def running(p: Obj) -> None:
            s = p["status"]
            if _terminal(p):
                return
            s["phase"] = "Running"
            s["hostIP"] = f"10.128.0.{node_idx}"
            s["podIP"] = f"10.{node_idx}.{random.randint(0, 255)}.{random.randint(2, 254)}"
            s["startTime"] = s.get("startTime") or started
            set_condition(s, "PodReadyToStartContainers", "True")
            set_condition(s, "Initialized", "True")
            set_condition(s, "ContainersReady", "True")
            set_condition(s, "Ready", "True")
            set_condition(s, "PodScheduled", "True")
            s["containerStatuses"] = [
                {
                    "name": proc.container,
                    "image": proc.image,
                    "imageID": "",
                    "containerID": f"sim://{process.pid}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
            ]

        await self._update_status("pods", ns, name, running)
        self._event(pod, "Started", f"Started container {proc.container}")
        self._spawn(self._monitor(proc))

    async def _monitor(self, proc: _Proc) -> None:
        rc = await proc.process.wait()
        try:
            if proc.detached:
                return
            code = exit_code(rc)
            message = ""
            try:
                with open(proc.termination_log, encoding="utf-8", errors="replace") as f:
                    message = f.read()[-4096:]
            except OSError:
                pass
            if not message.strip() and code != 0 and proc.policy == "FallbackToLogsOnError":
                with open(proc.log_path, encoding="utf-8", errors="replace") as f:
                    message = "".join(f.read().splitlines(keepends=True)[-80:])[-2048:]
            finished = now_rfc3339()

            def terminated(p: Obj) -> None:
                s = p["status"]
                # A pod stopped by a node shutdown is Failed whatever its exit code.
                s["phase"] = "Succeeded" if code == 0 and not proc.status_reason else "Failed"
                term: Obj = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": proc.started_at,
                    "finishedAt": finished,
                    "containerID": f"sim://{proc.process.pid}",
                }
                if message:
                    term["message"] = message
                if rc < 0:
                    term["signal"] = -rc
                s["containerStatuses"] = [
                    {
                        "name": proc.container,
                        "image": proc.image,
                        "imageID": "",
                        "containerID": f"sim://{proc.process.pid}",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"terminated": term},
                    }
                ]
                set_condition(s, "Ready", "False", "PodCompleted")
                set_condition(s, "ContainersReady", "False", "PodCompleted")
                set_condition(s, "PodReadyToStartContainers", "False")
                if proc.status_reason:
                    s["reason"] = proc.status_reason
                    s["message"] = proc.status_message or ""

            await self._update_status("pods", proc.namespace, proc.name, terminated)
        except Exception as e:
            self.errors.append(f"monitor {proc.name}: {e!r}")
        finally:
            self.procs.pop(proc.pod_uid, None)
            proc.done.set()

    async def _stop_process(self, proc: _Proc, grace: float) -> None:
        """SIGTERM, wait up to `grace`, SIGKILL, then wait for the status update."""
        proc.stopping = True
        self._event(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": proc.name, "namespace": proc.namespace, "uid": proc.pod_uid},
            },
            "Killing",
            f"Stopping container {proc.container}",
        )
        if proc.process.returncode is None:
            try:
                proc.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.process.wait(), timeout=max(grace, 0))
            except TimeoutError:
                _kill_group(proc.process.pid, signal.SIGKILL)
        await proc.done.wait()

    async def _terminate(self, pod: Obj) -> None:
        """Kubelet's part of a graceful deletion: stop the container, then finish the delete."""
        meta = pod["metadata"]
        try:
            proc = self.procs.get(meta["uid"])
            if proc is not None:
                await self._stop_process(proc, float(meta.get("deletionGracePeriodSeconds") or 0))
            elif not _terminal(pod) and (pod.get("spec") or {}).get("nodeName"):
                # Never started (or started elsewhere): report it stopped before removing.
                def stopped(p: Obj) -> None:
                    p["status"]["phase"] = "Failed"

                await self._update_status("pods", meta["namespace"], meta["name"], stopped)
            await self._request(
                "DELETE",
                self._path("pods", meta["namespace"], meta["name"]),
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
                ok404=True,
            )
        except _HttpError as e:
            if e.status != 409:
                self.errors.append(f"terminate {meta['name']}: {e!r}")
        except Exception as e:
            self.errors.append(f"terminate {meta['name']}: {e!r}")

    # -- disruptions -------------------------------------------------------------

    async def _wait_pod(self, ns: str, name: str, pred: Callable[[Obj | None], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            obj = await self._request("GET", self._path("pods", ns, name), ok404=True)
            if pred(obj):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {ns}/{name} did not reach the expected state")
            await asyncio.sleep(0.05)

    async def _preempt(self, ns: str, name: str, reason: str, grace: float, message: str | None) -> None:
        default_messages = {
            "TerminationByKubelet": NODE_SHUTDOWN_MESSAGE,
            "PreemptionByScheduler": "default-scheduler: preempting to accommodate a higher priority pod",
            "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
            "EvictionByEvictionAPI": "Eviction API: evicting",
        }
        msg = message or default_messages.get(reason, f"{reason}: terminating")

        def disrupt(p: Obj) -> None:
            set_condition(p["status"], "DisruptionTarget", "True", reason, msg)

        pod = await self._update_status("pods", ns, name, disrupt)
        if pod is None:
            raise KeyError(f"pod {ns}/{name} not found")
        if reason == "PreemptionByScheduler":
            await self._request("DELETE", self._path("pods", ns, name), {"gracePeriodSeconds": int(grace)}, ok404=True)
            await self._wait_pod(ns, name, lambda o: o is None, grace + 30)
            return
        proc = self.procs.get(pod["metadata"]["uid"])
        if proc is not None:
            if reason == "TerminationByKubelet":
                proc.status_reason, proc.status_message = "Terminated", NODE_SHUTDOWN_MESSAGE
            await self._stop_process(proc, grace)
        else:

            def failed(p: Obj) -> None:
                if not _terminal(p):
                    p["status"]["phase"] = "Failed"
                    if reason == "TerminationByKubelet":
                        p["status"]["reason"], p["status"]["message"] = "Terminated", NODE_SHUTDOWN_MESSAGE

            await self._update_status("pods", ns, name, failed)

    async def _evict(self, ns: str, name: str, grace: int | None, wait: bool) -> None:
        body: Obj = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
        if grace is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace}
        await self._request("POST", self._path("pods", ns, name, "eviction"), body)
        if wait:
            await self._wait_pod(ns, name, lambda o: o is None, (grace or 30) + 30)

    async def _delete_pod(self, ns: str, name: str, grace: int | None, wait: bool) -> None:
        params = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        await self._request("DELETE", self._path("pods", ns, name), params=params)
        if wait:
            await self._wait_pod(ns, name, lambda o: o is None, (grace or 30) + 30)

    async def _lose_node(self, node: str, keep_running: bool) -> list[str]:
        self.lost_nodes.add(node)
        affected = []
        for proc in list(self.procs.values()):
            if proc.node == node:
                proc.detached = True
                self.procs.pop(proc.pod_uid, None)
                if keep_running:
                    self.orphans.append(proc)
                else:
                    _kill_group(proc.process.pid, signal.SIGKILL)
        await self._request("DELETE", f"/api/v1/nodes/{node}", ok404=True)
        listing = await self._request("GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"})
        for pod in (listing or {}).get("items", []):
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            affected.append(name)

            def lost(p: Obj, name: str = name) -> None:
                set_condition(
                    p["status"],
                    "DisruptionTarget",
                    "True",
                    "DeletionByTaintManager",
                    "Taint manager: deleting due to NoExecute taint",
                )
                if not _terminal(p):
                    p["status"]["phase"] = "Failed"
                    p["status"]["reason"] = "NodeLost"
                    p["status"]["message"] = f"Node {node} which was running pod {name} is unresponsive"
                    set_condition(p["status"], "Ready", "False", "NodeLost")

            await self._update_status("pods", ns, name, lost)
            await self._request("DELETE", self._path("pods", ns, name), {"gracePeriodSeconds": 0}, ok404=True)
        return affected


class _HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values, command and args ($$ escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            var = value[i + 2 : end]
            out.append(env[var] if var in env else value[i : end + 1])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _kill_group(pid: int, sig: int) -> None:
    """Signal a container's whole process group (the container and its children)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

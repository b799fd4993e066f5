"""The operator end-to-end harness: the API emulator with the CRD, the pod simulator
running real `pipeline-runtime` processes, and the real `respawn-operator` as a
subprocess that can be killed and started again.

Used by tests/operator/test_op_e2e.py, the fault suite (tests/faults/) and
tools/record_health_fixtures.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from respawn_local.apiserver import ApiServerThread
from respawn_local.podsim import PodSim
from respawn_local.testkit import runner_rbac, wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
NS = "default"
Obj = dict[str, Any]


class OperatorProcess:
    """`respawn-operator` as a subprocess we can kill -9 and start again."""

    def __init__(self, env: dict[str, str], log: Path, args: Sequence[str] = ("--standalone", "-A")) -> None:
        self.env = env
        self.log = log
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = open(self.log, "ab")
        out.write(f"\n===== start {self.starts} =====\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            [str(BIN / "respawn-operator"), *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Cluster:
    def __init__(
        self,
        api: ApiServerThread,
        sim: PodSim,
        op: OperatorProcess,
        tmp: Path,
        kubeconfig: str,
        metrics_port: int,
        namespace: str = NS,
    ) -> None:
        self.api, self.sim, self.op, self.tmp = api, sim, op, tmp
        self.kubeconfig = kubeconfig
        self.metrics_port = metrics_port
        self.ns = namespace
        """Where `submit` creates runs and the other helpers look."""

    def submit(self, name: str, params: Obj | None = None, **spec: Any) -> Obj:
        body = {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "pipeline": "op_pipelines:Steps",
                "params": {"out": str(self.run_file(name, "out")), **(params or {})},
                "env": [
                    {"name": "PYTHONPATH", "value": str(HERE)},
                    {"name": "EXEC_LOG", "value": str(self.run_file(name, "exec"))},
                ],
                "terminationGracePeriodSeconds": 10,
                **spec,
            },
        }
        return self.api.create(body, namespace=self.ns)

    def run(self, name: str) -> Obj:
        return self.api.get("pipelineruns", name, self.ns)

    def status(self, name: str) -> Obj:
        return self.run(name).get("status") or {}

    def wait_status(self, name: str, pred: Callable[[Obj], Any], what: str, timeout: float = 60) -> Obj:
        def check() -> Obj | None:
            st = self.status(name)
            return st if pred(st) else None

        try:
            return wait_for(check, timeout, f"{name}: {what}")
        except AssertionError:
            print(json.dumps(self.status(name), indent=1))
            raise

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> Obj:
        return self.wait_status(name, lambda st: st.get("phase") == phase, f"phase {phase}", timeout)

    def running_pod(self, name: str, attempt: int, ready: bool = True) -> str:
        """The attempt's pod once its runtime is up: Running, and its log shows the runtime's
        `ready` line, printed once its SIGTERM handling is installed. A pod is Running from the
        moment its process starts; a stop that came before the interpreter got that far would
        end the process silently, so a test of how the runtime stops must wait for this.
        `ready=False`: Running is enough (a pod the simulator holds stopped never gets ready)."""
        uid = self.run(name)["metadata"]["uid"]

        def find() -> str | None:
            pods = self.api.list(
                "pods", self.ns, label_selector=f"respawn.dev/run-uid={uid},respawn.dev/attempt={attempt}"
            )
            live = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
            return next((pod for pod in live if not ready or '"event": "ready"' in self.pod_log(pod)), None)

        return wait_for(find, 30, f"{name}: running pod of attempt {attempt}")

    def jobs(self, name: str) -> list[str]:
        uid = self.run(name)["metadata"]["uid"]
        jobs = self.api.list("jobs", self.ns, label_selector=f"respawn.dev/run-uid={uid},respawn.dev/role=attempt")
        return sorted(j["metadata"]["name"] for j in jobs)

    def attempt_pods(self, name: str, attempt: int) -> list[Obj]:
        uid = self.run(name)["metadata"]["uid"]
        return self.api.list("pods", self.ns, label_selector=f"respawn.dev/run-uid={uid},respawn.dev/attempt={attempt}")

    def pod_log(self, pod: str) -> str:
        """What `kubectl logs <pod>` shows: the pods/log subresource, over HTTP."""
        import ssl
        import urllib.request

        req = urllib.request.Request(
            f"{self.api.url}/api/v1/namespaces/{self.ns}/pods/{pod}/log",
            headers={"Authorization": f"Bearer {self.api.admin_token}"},
        )
        tls = ssl.create_default_context(cafile=self.api.ca_file) if self.api.ca_file else None
        with urllib.request.urlopen(req, timeout=10, context=tls) as resp:
            return resp.read().decode("utf-8", "replace")  # type: ignore[no-any-return]

    def run_file(self, name: str, suffix: str) -> Path:
        """`<name>.<suffix>` in the test folder (`out`, `exec`); a hash for names past NAME_MAX."""
        import hashlib

        stem = name if len(name) < 200 else hashlib.sha256(name.encode()).hexdigest()
        return self.tmp / f"{stem}.{suffix}"

    def executions(self, name: str) -> list[tuple[str, int]]:
        path = self.run_file(name, "exec")
        if not path.exists():
            return []
        return [(s, int(a)) for s, a in (line.split() for line in path.read_text().splitlines())]

    def events(self, name: str) -> list[str]:
        return [
            e.get("reason", "")
            for e in self.api.list("events", self.ns)
            if e.get("involvedObject", {}).get("name") == name
            and e.get("involvedObject", {}).get("kind") == "PipelineRun"
        ]

    def patch_spec(self, name: str, spec: Obj) -> None:
        self.api.patch("pipelineruns", name, {"spec": spec}, self.ns)


@contextlib.contextmanager
def running_cluster(tmp: Path, **env: str) -> Iterator[Cluster]:
    """Emulator + CRD + pod simulator + the operator process; `env` adds operator settings."""
    api = ApiServerThread()
    api.start()
    kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
    api.create(yaml.safe_load((ROOT / "crds" / "pipelineruns.respawn.dev.yaml").read_text()))
    for manifest in runner_rbac(NS):
        api.create(manifest)
    sim = PodSim.attached(api, work_dir=str(tmp / "podsim"))
    sim.start()
    settings = {
        "KUBECONFIG": kubeconfig,
        "RESPAWN_DEFAULT_CHECKPOINT_URI": f"file://{tmp / 'checkpoints'}",
        "RESPAWN_DEFAULT_IMAGE": "respawn:test",
        "RESPAWN_METRICS_PORT": "0",
        "RESPAWN_RESYNC_SECONDS": "2",
        "RESPAWN_CLEANUP_TIMEOUT_SECONDS": "60",
        "RESPAWN_RUNNER_SERVICE_ACCOUNT": "respawn-runner",
        **env,
    }
    op = OperatorProcess({**os.environ, **settings}, tmp / "operator.log")
    op.start()
    try:
        yield Cluster(api, sim, op, tmp, kubeconfig, int(settings["RESPAWN_METRICS_PORT"]))
    finally:
        op.stop()
        sim.stop()
        api.stop()
        print(f"operator log: {tmp / 'operator.log'}")


def submit_parent(cluster: Cluster, name: str, foreach: dict[str, Any], **spec: Any) -> None:
    """A parent over op_pipelines:Steps whose items set `out` (each child writes its own file)."""
    cluster.api.create(
        {
            "apiVersion": "respawn.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "pipeline": "op_pipelines:Steps",
                "params": {"step_s": spec.pop("step_s", 0.05)},
                "env": [{"name": "PYTHONPATH", "value": str(HERE)}],
                "terminationGracePeriodSeconds": 10,
                "foreach": {"param": "out", **foreach},
                **spec,
            },
        },
        namespace=NS,
    )


def items(outs: list[Path]) -> dict[str, Any]:
    return {"items": [str(p) for p in outs]}

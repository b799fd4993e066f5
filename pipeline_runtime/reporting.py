"""Where a run's events go: the terminal, JSON logs, the pod's progress annotation,
and the one-line termination message the operator reads."""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import urllib.request
from typing import Any

from .contracts import (
    DEFAULT_SERVICEACCOUNT_DIR,
    DEFAULT_TERMINATION_LOG,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_SERVICEACCOUNT_DIR,
    ENV_TERMINATION_LOG,
    PROGRESS_ANNOTATION,
)

BAR_WIDTH = 10
JSON_PROGRESS_EVERY_SECONDS = 5.0
"""`step_progress` lines in JSON logs at most this often per run (and the last one of a step)."""


class Reporter:
    """Receives pipeline events; keeps the latest progress for the termination message."""

    def __init__(self, *, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.state: dict[str, Any] = {
            "attempt": None,
            "currentStep": None,
            "completedSteps": 0,
            "totalSteps": None,
            "lastCheckpoint": None,
        }
        self.pod = PodAnnotator.from_env()
        self._console: Any = None
        self._status: Any = None
        """The live line under a running step (rich Status), on a terminal."""
        self._step_line = ""
        self._last_logged_progress = 0.0
        if self.tty:
            from rich.console import Console

            self._console = Console(stderr=True)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        s = self.state
        if "attempt" in fields:
            s["attempt"] = fields["attempt"]
        if "total" in fields:
            s["totalSteps"] = fields["total"]
        if event == "start":
            s["completedSteps"] = fields["completed"]
        elif event == "step_start":
            s["currentStep"] = fields["step"]
        elif event == "commit":
            s["completedSteps"] = fields["completed"]
            s["lastCheckpoint"] = {
                "step": fields["step"],
                "seq": fields["seq"],
                "at": fields["at"],
                "kind": fields["kind"],
                **({"inStep": fields["in_step"]} if fields["in_step"] else {}),
            }
        elif event == "succeeded":
            s["currentStep"] = None
        self._print(event, fields)
        if self.pod is not None and event in ("start", "step_start", "commit", "succeeded"):
            self.pod.publish({**s, "at": fields.get("at")})

    def _print(self, event: str, fields: dict[str, Any]) -> None:
        if self._console is None:
            if event == "step_progress":  # a log line every few seconds is plenty
                finished = fields["total"] is not None and fields["done"] >= fields["total"]
                if not finished and time.monotonic() - self._last_logged_progress < JSON_PROGRESS_EVERY_SECONDS:
                    return
                self._last_logged_progress = time.monotonic()
            print(json.dumps({"event": event, **fields}, default=str), file=sys.stderr, flush=True)
            return
        c = self._console
        if event == "step_progress":
            self._show_progress(fields)
            return
        if event == "step_done" or event in ("succeeded", "restart", "retired"):
            self._stop_status()
        if event == "start":
            note = f" (resuming after {fields['completed']} done)" if fields["completed"] else ""
            c.print(f"[bold]{fields['pipeline']}[/] run {fields['run_id']} attempt {fields['attempt']}{note}")
        elif event == "step_start":
            self._stop_status()
            self._step_line = f"  [{fields['index']}/{fields['total']}] {fields['step']}"
            c.print(self._step_line + " …" + (" (continuing saved progress)" if fields.get("resumed") else ""))
        elif event == "step_done":
            c.print(f"  [green]✓[/] {fields['step']} {fields['duration_s']:.2f}s")
        elif event == "commit" and fields["kind"] in ("step", "progress"):
            mb = fields["bytes_written"] / 1e6
            what = f"progress in {fields['in_step']}" if fields["in_step"] else f"step {fields['step']} done"
            c.print(f"    checkpoint #{fields['seq']}: {what} ({mb:.1f} MB uploaded)", style="dim", markup=False)
        elif event in ("succeeded", "restart", "retired"):
            shown = {k: v for k, v in fields.items() if k not in ("pipeline", "run_id", "output", "checkpoint")}
            c.print(f"[bold]{event}[/] " + ", ".join(f"{k}={v}" for k, v in shown.items()))
            if fields.get("output"):
                c.print(f"  output: {fields['output']}", markup=False, highlight=False)
            if fields.get("checkpoint"):
                c.print(f"  checkpoint kept: {fields['checkpoint']}", markup=False, highlight=False)

    def _show_progress(self, fields: dict[str, Any]) -> None:
        """The step's line, redrawn in place: `[2/6] extract_frames  [####......] 480/1200 frames`."""
        done, total, unit = fields["done"], fields["total"], fields["unit"]
        if total:
            filled = max(0, min(done, total)) * BAR_WIDTH // total
            text = f"{self._step_line}  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {unit}"
        else:
            text = f"{self._step_line}  {done} {unit}"
        from rich.text import Text

        if self._status is None:
            self._status = self._console.status(Text(text), spinner="dots")
            self._status.start()
        else:
            self._status.update(Text(text))

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def termination(self, code: int, reason: str, message: str) -> dict[str, Any]:
        """The one-line JSON reason for /dev/termination-log."""
        s = self.state
        return {
            "exitCode": code,
            "reason": reason,
            "message": message[:2000],
            "attempt": s["attempt"],
            "step": s["currentStep"],
            "completedSteps": s["completedSteps"],
            "totalSteps": s["totalSteps"],
            "lastCheckpoint": s["lastCheckpoint"],
        }

    def close(self) -> None:
        self._stop_status()
        if self.pod is not None:
            self.pod.close()


def write_termination_log(record: dict[str, Any]) -> None:
    """Best effort: the path exists in pods; locally only when asked for."""
    path = os.environ.get(ENV_TERMINATION_LOG)
    if not path:
        if not os.path.exists(DEFAULT_TERMINATION_LOG):
            return
        path = DEFAULT_TERMINATION_LOG
    try:
        with open(path, "w") as f:
            f.write(json.dumps(record, default=str) + "\n")
    except OSError:
        pass


class PodAnnotator:
    """Publishes progress on the pod's own annotation; needs only `pods: get, patch`.

    Latest value wins; a background thread sends it, so a slow or absent API
    server never slows a step. Failures are ignored: progress is a convenience,
    the checkpoint and the termination message are the contract.
    """

    def __init__(
        self, api: str, namespace: str, name: str, token_file: str | None, context: ssl.SSLContext | None
    ) -> None:
        self.url = f"{api.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{name}"
        self.token_file = token_file
        """The pod's ServiceAccount token, read again for every report (kubelet rotates it)."""
        self.ssl = context
        self._latest: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="respawn-progress", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls) -> PodAnnotator | None:
        """In a pod: the API from KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA.

        ``RESPAWN_KUBE_API`` names another API URL (the local pod simulator's).
        """
        name = os.environ.get(ENV_POD_NAME)
        namespace = os.environ.get(ENV_POD_NAMESPACE)
        if not (name and namespace):
            return None
        sa = os.environ.get(ENV_SERVICEACCOUNT_DIR) or DEFAULT_SERVICEACCOUNT_DIR
        token_file = os.path.join(sa, "token")
        ca_file = os.path.join(sa, "ca.crt")
        api = os.environ.get("RESPAWN_KUBE_API")
        if not api:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                return None
            host = f"[{host}]" if ":" in host else host
            api = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
        context = None
        if api.startswith("https"):
            try:
                context = ssl.create_default_context(cafile=ca_file)
            except OSError:
                return None
        return cls(api, namespace, name, token_file if os.path.exists(token_file) else None, context)

    def publish(self, progress: dict[str, Any]) -> None:
        with self._cond:
            self._latest = dict(progress)
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or self._closed)
                item, self._latest = self._latest, None
                if item is None:
                    return
            self._send(item)

    def _send(self, progress: dict[str, Any]) -> None:
        body = json.dumps(
            {
                "metadata": {
                    "annotations": {PROGRESS_ANNOTATION: json.dumps(progress, separators=(",", ":"), default=str)}
                }
            }
        )
        req = urllib.request.Request(
            self.url, data=body.encode(), method="PATCH", headers={"Content-Type": "application/merge-patch+json"}
        )
        try:
            if self.token_file:
                with open(self.token_file) as f:
                    req.add_header("Authorization", f"Bearer {f.read().strip()}")
            urllib.request.urlopen(req, timeout=5, context=self.ssl).close()
        except Exception:  # noqa: BLE001, S110 - best effort by design
            pass

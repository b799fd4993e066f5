"""Start attempts by forking a process that has already imported the pipeline.

A short pipeline spends most of a fresh process's life importing numpy, OpenCV and
pydantic; a chaos session starts several attempts per case. The fork server imports
the runtime and the pipeline's module once, then forks one child per attempt: each
child is a real process (own pid, own signals, killed by a real signal) that starts
at `pipeline-runtime run` with everything imported. Before running it reseeds the
random generators a fresh process would seed itself (Python's `random` does so on
fork already; numpy's legacy global one does not), and it never ran a step before
the fork, so module state is what a fresh import leaves.

What a fork cannot give is a new string-hash seed: the session's first clean run is
therefore a fresh process, so a result that depends on set order still differs
between the two clean runs and is named as non-determinism.

Protocol, one JSON object per line: the server says {"ready": pid} once it has imported
everything; the engine writes {"id", "argv", "env", "log"}; the server answers
{"id", "pid"} once forked and {"id", "exit"} (a Popen-style return code) once the
child ended. At the end of its input the server kills what still runs and exits at
once, without the interpreter's teardown (nothing of it is kept).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from typing import IO, Any


def _child(request: dict[str, Any]) -> int:
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # New file objects, new locks: the server's could be held by nothing that runs here.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.update(request["env"])
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    from .child import run

    return run(request["argv"])


def serve(target: str) -> None:
    """The server's main loop (runs in its own process: `python -m ...forkserver TARGET`)."""
    from ..registry import resolve

    resolve(target)  # import the pipeline's module (and what it imports) once
    from .. import cli  # noqa: F401 - the command itself
    from . import child  # noqa: F401

    live: dict[int, Any] = {}
    out = sys.stdout
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    buffer = b""
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.005)
        if readable:
            chunk = os.read(stdin, 65536)
            if not chunk:
                for pid in live:
                    os.kill(pid, signal.SIGKILL)
                out.flush()
                os._exit(0)  # tearing down numpy, OpenCV and the pipeline's modules is wasted time
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                out.flush()
                pid = os.fork()
                if pid == 0:
                    code = 70
                    try:
                        code = _child(request)
                    finally:
                        os._exit(code)
                live[pid] = request["id"]
                out.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
                out.flush()
        while live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.write(json.dumps({"id": live.pop(pid), "exit": os.waitstatus_to_exitcode(status)}) + "\n")
            out.flush()


class Forked:
    """A forked attempt, with the part of Popen's interface the engine uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("forked attempt", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The engine's end: start the server, fork attempts through it."""

    def __init__(self, target: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline_runtime.chaos.forkserver", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._next = 0
        self._pending: dict[int, tuple[threading.Event, list[Forked]]] = {}
        self._running: dict[int, Forked] = {}
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout,), daemon=True, name="chaos-forkserver"
        )
        self._reader.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            message = json.loads(raw)
            with self._lock:
                if "ready" in message:
                    self._ready.set()
                elif "pid" in message:
                    forked = Forked(message["pid"])
                    self._running[message["id"]] = forked
                    event, box = self._pending.pop(message["id"])
                    box.append(forked)
                    event.set()
                else:
                    self._running.pop(message["id"])._end(message["exit"])
        self._ready.set()  # gone before or after its imports: nobody should wait for it
        with self._lock:  # the server is gone: nothing will end by itself any more
            for forked in self._running.values():
                forked._end(-signal.SIGKILL)
            for event, _ in self._pending.values():
                event.set()

    def wait_ready(self, timeout: float = 60) -> bool:
        """Wait until the server has imported the pipeline (or is gone); whether it did in time.
        An attempt timed after this starts as fast as the cases' attempts will."""
        return self._ready.wait(timeout) and self.proc.poll() is None

    def spawn(self, argv: list[str], env: dict[str, str], log: str, timeout: float = 60) -> Forked:
        event, box = threading.Event(), []  # type: ignore[var-annotated]
        with self._lock:
            self._next += 1
            ident = self._next
            self._pending[ident] = (event, box)
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"id": ident, "argv": argv, "env": env, "log": log}).encode() + b"\n")
            self.proc.stdin.flush()
        if not event.wait(timeout) or not box:
            raise RuntimeError("the chaos fork server did not start an attempt")
        forked: Forked = box[0]
        return forked

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve(sys.argv[1])

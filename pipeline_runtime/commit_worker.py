"""Background committer: uploads and commits overlap with the next step's compute.

Commits are processed strictly in order by one thread; the artifacts of one
commit upload in parallel. The first error (Superseded, storage down) stops the
worker; the step thread sees it at its next safe point.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .checkpoint import Commit, Progress, RunLog, Superseded
from .codec import Encoder, artifact_path


class CommitWorker:
    """Turns (body, context snapshot, progress snapshot) into commits, in order."""

    def __init__(
        self,
        runlog: RunLog,
        encoder: Encoder,
        *,
        on_commit: Callable[[int, Commit, int], None],
        pool: Executor | None = None,
    ) -> None:
        self.runlog = runlog
        self.encoder = encoder
        self.pool = pool
        self.on_commit = on_commit
        self.seq = 0
        self.claim_seq: int | None = None
        """Our claim's slot: it exists for as long as the run does (retiring stubs it)."""
        self.error: BaseException | None = None
        self._context_json: Any = {"dict": {}}
        self._queue: queue.Queue[tuple[Commit, Any, Any] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def claim(self, seq: int, body: Commit, context_plan: Any, progress_plan: Any) -> None:
        """Write the attempt's claim synchronously at `seq`; raises Superseded if taken."""
        self.seq = seq - 1
        self._commit(body, context_plan, progress_plan)
        self.claim_seq = seq
        self._thread = threading.Thread(target=self._loop, name="respawn-commit", daemon=True)
        self._thread.start()

    def submit(self, body: Commit, context_plan: Any, progress_plan: Any) -> None:
        """Queue a commit; `context_plan=None` reuses the last committed context."""
        with self._idle:
            self._pending += 1
        self._queue.put((body, context_plan, progress_plan))

    def flush(self, timeout: float | None = None, at_most: int = 0, stop: Callable[[], bool] | None = None) -> bool:
        """Wait until at most `at_most` commits are queued or running.

        Returns False on timeout, or as soon as `stop()` is true (polled).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending > at_most and self.error is None:
                if stop is not None and stop():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(0.1 if left is None else min(0.1, left))
            return True

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self.error is None:
                    self._commit(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the step thread
                self.error = e
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _purged(self) -> bool:
        """The run's checkpoint was deleted (`cleanup --purge`): no slot is left to fence
        with, so the vanished claim is the signal."""
        return self.claim_seq is not None and not self.runlog.slot_taken(self.claim_seq)

    def _commit(self, body: Commit, context_plan: Any, progress_plan: Any) -> None:
        if self.runlog.slot_taken(self.seq + 1):
            # Someone else wrote after us: don't upload for a commit that must fail.
            self.runlog.append(self.seq + 1, body)  # raises Superseded with the reason
        if self._purged():
            raise Superseded("the run's checkpoint was deleted; this attempt stops")
        uploaded = 0
        new_shas: list[str] = []
        if context_plan is not None:
            context_json, n = self.encoder.resolve(context_plan, self.pool, new_shas)
            uploaded += n
        else:
            context_json = self._context_json
        body.context = context_json
        if progress_plan is not None:
            state_json, n = self.encoder.resolve(progress_plan["state"], self.pool, new_shas)
            uploaded += n
            body.progress = Progress(step=progress_plan["step"], state=state_json)
        try:
            self.runlog.append(self.seq + 1, body)
        except Superseded:
            if new_shas and self.runlog.is_retired():
                # The run finished and was cleaned up while we uploaded: take our
                # artifacts back out. (Not otherwise: a live newer attempt may
                # reference the same content-addressed objects.)
                for sha in new_shas:
                    self.runlog.delete_artifact(artifact_path(sha, self.encoder.epoch))
            raise
        if self._purged():
            # Purged while we uploaded: take back what we wrote, leave nothing behind.
            self.runlog.delete_commit(self.seq + 1)
            for sha in new_shas:
                self.runlog.delete_artifact(artifact_path(sha, self.encoder.epoch))
            raise Superseded("the run's checkpoint was deleted; this attempt stops")
        self.seq += 1
        if context_plan is not None:
            self._context_json = context_json
            self.encoder.forget_except(
                {"list": [context_json, body.progress.state if body.progress is not None else {}]}
            )
        self.on_commit(self.seq, body, uploaded)

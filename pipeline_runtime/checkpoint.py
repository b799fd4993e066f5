"""The checkpoint log of one run: append-only, fenced commit objects.

Layout under the store (see docs/checkpoints.md):

    <tenant>/<run_id>/commits/00000007.json     one object per commit, created once
    <tenant>/<run_id>/artifacts/ab/ab12…        content-addressed values

Every commit is created with a create-only write (GCS `if_generation_match=0`),
so a commit is atomic and is a compare-and-set: a writer only ever writes slot
`last_seen + 1`, and slots are never emptied while the run lives (cleanup turns
old commits into small stubs instead of deleting them). A stale attempt's write
therefore always lands on a taken slot, gets PreconditionFailed, re-reads the
latest commit, sees a newer attempt (or the run's end) and exits 76.

No object is ever rewritten at step rate: GCS allows about one write per second
per object name, and each slot is written once (twice at cleanup).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .codec import ReadInto, artifact_epoch, artifact_path
from .commit import (
    CHECKPOINT_VERSION,
    FINISHED_KINDS,
    Commit,
    CorruptCheckpoint,
    Entry,
    Kind,
    Progress,
    Stub,
    Unreadable,
    new_nonce,
    now,
    parse_commit,
    seal,
    tombstone_of,
)
from .contracts import RUN_ID_MAX, ExitCode, Reason
from .errors import RespawnError
from .storage.base import NotFound, PreconditionFailed, ReadsInto, Store, local_puts

_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}")


class Superseded(RespawnError):
    """A newer attempt owns the run, or the run already finished (exit 76)."""

    exit_code = ExitCode.SUPERSEDED
    reason = Reason.SUPERSEDED


def check_name(kind: str, value: str) -> str:
    """Run ids and tenants become path segments: refuse anything that could escape."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:  # fullmatch: no trailing \n
        raise ValueError(
            f"{kind} {str(value)[:80]!r} is not allowed: use letters, digits, '.', '_', '-' "
            f"(no '..', at most {RUN_ID_MAX} characters, starting with a letter or digit)"
        )
    return value


def fingerprint(definition: dict[str, object]) -> str:
    """Stable hash of a pipeline definition (name, version, steps)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _slot(seq: int) -> str:
    return f"commits/{seq:08d}.json"


@dataclass
class Latest:
    """The newest commit of a run, as found when listing the log."""

    seq: int
    body: Entry | None
    """None when the newest commit could not be parsed."""
    error: str | None = None


class RunLog:
    """All reads and writes of one run's checkpoint folder."""

    def __init__(self, store: Store, tenant: str, run_id: str) -> None:
        self.store = store
        self.tenant = check_name("tenant", tenant)
        self.run_id = check_name("run id", run_id)
        self.prefix = f"{tenant}/{run_id}/"

    @property
    def uri(self) -> str:
        return f"{self.store.uri.rstrip('/')}/{self.prefix}"

    def _p(self, rel: str) -> str:
        return self.prefix + rel

    # -- commits ---------------------------------------------------------------
    def seqs(self) -> list[int]:
        out = []
        for path in self.store.list(self._p("commits/")):
            m = _SLOT_NAME.fullmatch(path.rsplit("/", 1)[-1])  # ASCII digits only: not "².json"
            if m:
                out.append(int(m[1]))
        return sorted(out)

    def read(self, seq: int) -> Entry:
        raw = self.store.get(self._p(_slot(seq)))
        return parse_commit(raw, where=f"{self.uri}{_slot(seq)}")

    def latest(self) -> Latest | None:
        seqs = self.seqs()
        if not seqs:
            return None
        seq = seqs[-1]
        try:
            return Latest(seq, self.read(seq))
        except CorruptCheckpoint as e:
            return Latest(seq, None, str(e))
        except NotFound:
            return Latest(seq, None, f"commit {seq} vanished while reading")

    def history(self) -> list[Entry | Unreadable]:
        """Every commit in order; the ones that cannot be read as `Unreadable`."""
        out: list[Entry | Unreadable] = []
        for seq in self.seqs():
            try:
                out.append(self.read(seq))
            except (CorruptCheckpoint, NotFound) as e:
                out.append(Unreadable(seq, str(e)))
        return out

    def slot_taken(self, seq: int) -> bool:
        """True when commit `seq` exists: a cheap check before uploading for it."""
        return self.store.exists(self._p(_slot(seq)))

    def is_retired(self) -> bool:
        latest = self.latest()
        return bool(latest and latest.body and latest.body.kind is Kind.TOMBSTONE)

    def append(self, seq: int, body: Commit) -> None:
        """Create commit `seq`; raise Superseded if someone else holds the slot."""
        body.seq = seq
        data = seal(body)
        try:
            self.store.put(self._p(_slot(seq)), data, if_absent=True)
        except PreconditionFailed:
            # A retried write of ours may have landed before the error: same bytes = ours.
            try:
                if self.store.get(self._p(_slot(seq))) == data:
                    return
            except NotFound:
                pass
            raise Superseded(self._superseded_message(body.attempt)) from None

    def _superseded_message(self, attempt: int) -> str:
        latest = self.latest()
        if latest is None or latest.body is None:
            return f"attempt {attempt} lost the commit race"
        other = latest.body
        if isinstance(other, Stub):
            return f"the run was retired (commit {other.seq} is a stub); attempt {attempt} stops"
        if other.kind in FINISHED_KINDS:
            return f"the run already finished ({other.outcome}, attempt {other.attempt}); attempt {attempt} stops"
        return f"attempt {other.attempt} owns the run now; stale attempt {attempt} stops without committing"

    # -- artifacts -------------------------------------------------------------
    @property
    def local_puts(self) -> bool:
        """storage.base.local_puts of the store this log is in."""
        return local_puts(self.store)

    def put_artifact(self, path: str, data: bytes | memoryview) -> None:
        self.store.put(self._p(path), data)

    def delete_commit(self, seq: int) -> None:
        """Only for taking back a commit that landed in a purged run."""
        self.store.delete(self._p(_slot(seq)))

    def delete_artifact(self, path: str) -> None:
        self.store.delete(self._p(path))

    def get_artifact(self, path: str) -> bytes:
        return self.store.get(self._p(path))

    @property
    def artifact_reader(self) -> ReadInto | None:
        """`codec.decode`'s `get_into`: reads an artifact into a buffer, where the store can."""
        store = self.store
        if not isinstance(store, ReadsInto):
            return None
        return lambda path, allocate: store.get_into(self._p(path), allocate)

    def artifact_shas(self, epoch: int = 0) -> set[str]:
        """The artifacts stored in `epoch`."""
        base = len(self.prefix)
        return {
            p.rsplit("/", 1)[-1] for p in self.store.list(self._p("artifacts/")) if artifact_epoch(p[base:]) == epoch
        }

    # -- cleanup ---------------------------------------------------------------
    def retire(self, tombstone: Commit, last_seq: int) -> int:
        """Leave only a tombstone: write it, drop artifacts, stub older commits.

        The tombstone is written first, so a crash halfway leaves a finished run
        with some garbage, never an open log. Returns the tombstone's seq.

        Fenced like a commit: the retirer may have been paused (a stale pod) while a
        newer attempt wrote after the tombstone (`rerunFrom` on a finished run). An
        attempt that starts over takes a new artifact epoch, the seq of the commit it
        found newest, and uploads into it; so everything a newer attempt references is
        in an epoch >= this tombstone's seq, and the retirer deletes only epochs below
        it, whenever it wakes up. It also stops early (and raises Superseded) once a
        newer commit exists.
        """
        seq = last_seq + 1
        self.append(seq, tombstone)
        self.sweep(seq)
        return seq

    def sweep(self, seq: int) -> None:
        """The second half of `retire` for the tombstone at `seq`: drop the artifacts of
        older epochs and stub the older commits. Run again, it finishes what an
        interrupted cleanup left (it is idempotent); fenced the same way."""
        lock = threading.Lock()
        overtaken: list[int] = []

        def still_newest() -> bool:
            # A newer attempt's first write is its claim at seq + 1: one existence check.
            with lock:
                if not overtaken and self.slot_taken(seq + 1):
                    overtaken.append(seq + 1)
                return not overtaken

        def delete(path: str) -> None:
            if artifact_epoch(path[len(self.prefix) :]) < seq and still_newest():
                self.store.delete(path)

        def stub(old: int) -> None:
            # Overwrite, never delete: an empty slot could be filled by a stale writer.
            if still_newest():
                self.store.put(self._p(_slot(old)), seal(Stub(seq=old, tombstone=seq)))

        # Object stores answer one request at a time per connection: fan out.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(delete, self.store.list(self._p("artifacts/"))))
            list(pool.map(stub, [old for old in self.seqs() if old < seq]))
        if overtaken:
            raise Superseded(
                f"commit {overtaken[0]} landed after this cleanup's tombstone {seq}: a newer "
                "attempt owns the run, so the cleanup stopped and its artifacts stay"
            )

    def purge(self) -> int:
        """Remove everything of the run, tombstone included (the PipelineRun is gone)."""
        paths = self.store.list(self.prefix)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.store.delete, paths))
        return len(paths)


_SLOT_NAME = re.compile(r"([0-9]{1,18})\.json")


__all__ = [
    "CHECKPOINT_VERSION",
    "FINISHED_KINDS",
    "Commit",
    "CorruptCheckpoint",
    "Entry",
    "Kind",
    "Latest",
    "Progress",
    "RunLog",
    "Stub",
    "Superseded",
    "Unreadable",
    "artifact_path",
    "check_name",
    "fingerprint",
    "new_nonce",
    "now",
    "parse_commit",
    "seal",
    "tombstone_of",
]

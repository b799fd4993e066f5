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

import datetime as dt
import enum
import hashlib
import json
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .codec import artifact_epoch, artifact_path
from .contracts import RUN_ID_MAX, ExitCode, Reason
from .errors import RespawnError
from .storage.base import NotFound, PreconditionFailed, Store

CHECKPOINT_VERSION = "2.1"
"""Format of commit objects. "1.0" was the seed's single checkpoint.json."""
READABLE_VERSIONS = ("2.0", "2.1")
SEALED_VERSIONS = ("2.1",)
"""Versions whose commits carry a `digest` of their canonical body (2.0 commits have none)."""


class Kind(str, enum.Enum):
    """What a commit is (a str, so bodies read back from JSON compare equal to it)."""

    CLAIM = "claim"
    """An attempt takes the run over (fences older attempts); carries the state it starts from."""
    STEP = "step"
    """A step finished: its outputs are in the context."""
    PROGRESS = "progress"
    """Intra-step progress of the current step (`ctx.save_progress`)."""
    FAILED = "failed"
    """A step raised; the context is the one before it."""
    FINAL = "final"
    """Every step done (retain: Always keeps everything behind it)."""
    TOMBSTONE = "tombstone"
    """The run was retired: artifacts gone, outcome kept; fences stale attempts."""
    STUB = "stub"
    """An older commit overwritten by retire (only `seq` and the tombstone's seq)."""


FINISHED_KINDS = (Kind.FINAL, Kind.TOMBSTONE)
"""Commits after which no attempt may commit."""

SEED_FIELDS = ("pipeline_name", "run_guid", "completed_steps", "context", "steps_summary", "checkpoint_version")

_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}")


class Superseded(RespawnError):
    """A newer attempt owns the run, or the run already finished (exit 76)."""

    exit_code = ExitCode.SUPERSEDED
    reason = Reason.SUPERSEDED


class CorruptCheckpoint(RespawnError):
    """A commit or artifact cannot be read back (truncated, foreign, damaged): exit 65."""

    exit_code = ExitCode.INCOMPATIBLE_CHECKPOINT
    reason = Reason.INCOMPATIBLE_CHECKPOINT


def check_name(kind: str, value: str) -> str:
    """Run ids and tenants become path segments: refuse anything that could escape."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:  # fullmatch: no trailing \n
        raise ValueError(
            f"{kind} {str(value)[:80]!r} is not allowed: use letters, digits, '.', '_', '-' "
            f"(no '..', at most {RUN_ID_MAX} characters, starting with a letter or digit)"
        )
    return value


def now() -> str:
    """UTC timestamp in the Kubernetes style."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(definition: dict[str, Any]) -> str:
    """Stable hash of a pipeline definition (name, version, steps)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _slot(seq: int) -> str:
    return f"commits/{seq:08d}.json"


@dataclass
class Latest:
    """The newest commit of a run, as found when listing the log."""

    seq: int
    body: dict[str, Any] | None
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

    def read(self, seq: int) -> dict[str, Any]:
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

    def history(self) -> list[dict[str, Any]]:
        """Every readable commit in order; unreadable ones appear as {seq, error}."""
        out = []
        for seq in self.seqs():
            try:
                out.append(self.read(seq))
            except (CorruptCheckpoint, NotFound) as e:
                out.append({"seq": seq, "error": str(e)})
        return out

    def slot_taken(self, seq: int) -> bool:
        """True when commit `seq` exists: a cheap check before uploading for it."""
        return self.store.exists(self._p(_slot(seq)))

    def is_retired(self) -> bool:
        latest = self.latest()
        return bool(latest and latest.body and latest.body.get("kind") == Kind.TOMBSTONE)

    def append(self, seq: int, body: dict[str, Any]) -> None:
        """Create commit `seq`; raise Superseded if someone else holds the slot."""
        body["seq"] = seq
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
            raise Superseded(self._superseded_message(body["attempt"])) from None

    def _superseded_message(self, attempt: int) -> str:
        latest = self.latest()
        if latest is None or latest.body is None:
            return f"attempt {attempt} lost the commit race"
        other = latest.body
        if other.get("kind") in FINISHED_KINDS:
            return (
                f"the run already finished ({other.get('outcome')}, attempt "
                f"{other.get('attempt')}); attempt {attempt} stops"
            )
        return f"attempt {other.get('attempt')} owns the run now; stale attempt {attempt} stops without committing"

    # -- artifacts -------------------------------------------------------------
    def put_artifact(self, path: str, data: bytes | memoryview) -> None:
        self.store.put(self._p(path), data)

    def delete_commit(self, seq: int) -> None:
        """Only for taking back a commit that landed in a purged run."""
        self.store.delete(self._p(_slot(seq)))

    def delete_artifact(self, path: str) -> None:
        self.store.delete(self._p(path))

    def get_artifact(self, path: str) -> bytes:
        return self.store.get(self._p(path))

    def artifact_shas(self, epoch: int = 0) -> set[str]:
        """The artifacts stored in `epoch`."""
        base = len(self.prefix)
        return {
            p.rsplit("/", 1)[-1] for p in self.store.list(self._p("artifacts/")) if artifact_epoch(p[base:]) == epoch
        }

    # -- cleanup ---------------------------------------------------------------
    def retire(self, tombstone: dict[str, Any], last_seq: int) -> int:
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
            body = {"seq": old, "kind": Kind.STUB.value, "checkpoint_version": CHECKPOINT_VERSION, "tombstone": seq}
            if still_newest():
                self.store.put(self._p(_slot(old)), seal(body))

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


def _canonical(body: dict[str, Any]) -> bytes:
    # Key order is kept: a resumed step must see dicts in the order a clean run does.
    return json.dumps(body, separators=(",", ":")).encode()


def seal(body: dict[str, Any]) -> bytes:
    """The bytes of a commit: its canonical JSON with a sha256 `digest` of itself (without it) last."""
    body.pop("digest", None)
    text = _canonical(body)
    digest = hashlib.sha256(text).hexdigest()
    return text[:-1] + f',"digest":"{digest}"}}'.encode()


def parse_commit(raw: bytes, where: str) -> dict[str, Any]:
    """Parse and check one commit object: JSON, version, digest, fields.

    Whatever the bytes hold, the answer is a commit or CorruptCheckpoint, never
    another exception (huge ints and deep nesting included).
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON, or a >4300-digit int
        raise CorruptCheckpoint(f"{where} is not valid JSON ({str(e)[:120]}); truncated or overwritten") from None
    if not isinstance(body, dict):
        raise CorruptCheckpoint(f"{where} is not a commit object")
    version = body.get("checkpoint_version")
    if version not in READABLE_VERSIONS:
        raise CorruptCheckpoint(
            f"{where} has checkpoint_version {str(version)[:40]!r}; this runtime reads {', '.join(READABLE_VERSIONS)}"
        )
    if version in SEALED_VERSIONS:
        digest = body.pop("digest", None)
        if not isinstance(digest, str) or hashlib.sha256(_canonical(body)).hexdigest() != digest:
            raise CorruptCheckpoint(f"{where} does not match its digest: it was damaged or edited after it was written")
    if body.get("kind") == Kind.STUB:
        return body
    missing = [f for f in ("seq", "attempt", "kind", *SEED_FIELDS) if f not in body]
    if body.get("kind") == Kind.TOMBSTONE:
        missing = [f for f in missing if f not in ("context",)]
    if missing:
        raise CorruptCheckpoint(f"{where} lacks {', '.join(missing)}")
    for name, kind, ok in _FIELD_TYPES:
        if name in body and not ok(body[name]):
            raise CorruptCheckpoint(f"{where}: {name} should be {kind}, found {body[name]!r:.60}")
    return body


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_FIELD_TYPES: list[tuple[str, str, Any]] = [
    ("seq", "an integer", _int),
    ("attempt", "an integer", _int),
    ("kind", "a commit kind", lambda v: v in {k.value for k in Kind} - {Kind.STUB.value}),
    ("pipeline_name", "a string", lambda v: isinstance(v, str)),
    ("run_guid", "a string", lambda v: isinstance(v, str)),
    ("completed_steps", "a list of step names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    (
        "context",
        "a context node",
        lambda v: isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("json", "dict", "ref"),
    ),
    ("steps_summary", "an object", lambda v: v is None or isinstance(v, dict)),
    ("progress", "an object", lambda v: v is None or isinstance(v, dict)),
]


def new_nonce() -> str:
    return uuid.uuid4().hex


def tombstone_of(body: dict[str, Any], *, outcome: str) -> dict[str, Any]:
    """The tombstone that retires a run whose newest commit is `body`: the one builder
    the runtime (on success) and `pipeline-runtime cleanup` use. It keeps what fences
    and what `inspect` shows (attempt, steps, summary, definition), drops the state."""
    tomb = {k: v for k, v in body.items() if k not in ("context", "progress", "digest", "seq")}
    tomb.update(
        kind=Kind.TOMBSTONE.value, nonce=new_nonce(), at=now(), checkpoint_version=CHECKPOINT_VERSION, outcome=outcome
    )
    for key, empty in (
        ("attempt", 0),
        ("pipeline_name", ""),
        ("run_guid", ""),
        ("completed_steps", []),
        ("steps_summary", {}),
    ):
        if tomb.get(key) is None:
            tomb[key] = empty
    return tomb


__all__ = [
    "CHECKPOINT_VERSION",
    "FINISHED_KINDS",
    "CorruptCheckpoint",
    "Kind",
    "Latest",
    "RunLog",
    "Superseded",
    "artifact_path",
    "check_name",
    "fingerprint",
    "now",
    "parse_commit",
    "seal",
    "tombstone_of",
]

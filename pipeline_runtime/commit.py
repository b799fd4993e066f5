"""One commit of a run's checkpoint log, typed: where commits are built, sealed and checked.

A commit object is the JSON of a `Commit` (or, once a cleanup overwrote it, a `Stub`)
with a sha256 `digest` of its own canonical body as its last field. `seal` writes it,
`parse_commit` is the only reader: whatever the bytes hold, it answers a `Commit`, a
`Stub` or `CorruptCheckpoint` naming the slot and what is wrong, never another exception
(a >4300-digit int, 1000-deep JSON, a field of the wrong type, an edited value).

The runtime (pipeline.py, commit_worker.py, resume.py), `inspect` and `cleanup` (cli.py)
use these models; the chaos judge reads them as JSON records (`Commit.record`), the
same shape `inspect --json` prints.

Context and progress values stay codec nodes (plain dicts, codec.py): the model checks
their outer shape, `codec.decode` checks the rest when it rebuilds the values.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from .contracts import ExitCode, Reason
from .errors import RespawnError

CHECKPOINT_VERSION = "2.2"
"""Format of commit objects. "1.0" was the seed's single checkpoint.json; 2.1 sealed each
commit with a digest; 2.2 keeps small numpy arrays inline (codec.INLINE_ARRAY_LIMIT)."""
READABLE_VERSIONS = ("2.0", "2.1", "2.2")
SEALED_VERSIONS = ("2.1", "2.2")
"""Versions whose commits carry a `digest` of their canonical body (2.0 commits have none)."""

Node = dict[str, Any]
"""An encoded context value (codec.py): one key, `json`, `dict`, `ref`, ..."""


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


class CorruptCheckpoint(RespawnError):
    """A commit or artifact cannot be read back (truncated, foreign, damaged): exit 65."""

    exit_code = ExitCode.INCOMPATIBLE_CHECKPOINT
    reason = Reason.INCOMPATIBLE_CHECKPOINT


class Progress(BaseModel):
    """Intra-step state saved by `ctx.save_progress` for the step `step`."""

    model_config = ConfigDict(extra="forbid")

    step: StrictStr
    state: Node


class Commit(BaseModel):
    """Every commit but a stub. The field order is the order of the written JSON."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_version: StrictStr = CHECKPOINT_VERSION
    kind: Kind
    attempt: StrictInt
    at: StrictStr | None = None
    nonce: StrictStr | None = None
    pipeline_name: StrictStr
    run_guid: StrictStr
    tenant: StrictStr | None = None
    """None only in commits written before tenants existed."""
    definition: dict[str, Any] | None = None
    """{"pipeline", "version", "steps": [[name, version, code digest], ...]}: what `fingerprint` hashes."""
    fingerprint: StrictStr | None = None
    params_hash: StrictStr | None = None
    completed_steps: list[StrictStr]
    step: StrictStr | None = None
    """The step running when the commit was made (the one finished, for a step commit)."""
    steps_summary: dict[StrictStr, dict[str, Any]] | None
    outcome: StrictStr | None = None
    progress: Progress | None = None
    artifact_epoch: StrictInt = Field(default=0, ge=0)
    resumed_from: dict[str, Any] | None = None
    context: Node | None = None
    """None only in a tombstone (its artifacts are gone)."""
    seq: StrictInt = Field(default=0, ge=0)
    """Set by `RunLog.append` when the commit is written at its slot."""

    @field_validator("kind")
    @classmethod
    def _not_a_stub(cls, kind: Kind) -> Kind:
        if kind is Kind.STUB:
            raise ValueError("a stub has only seq, kind and tombstone")
        return kind

    @field_validator("context")
    @classmethod
    def _context_node(cls, node: Node | None) -> Node | None:
        if node is not None and (len(node) != 1 or next(iter(node)) not in ("json", "dict", "ref")):
            raise ValueError("should be a context node ({json|dict|ref: ...})")
        return node

    @field_validator("definition")
    @classmethod
    def _definition(cls, definition: dict[str, Any] | None) -> dict[str, Any] | None:
        steps = (definition or {}).get("steps", [])
        if not isinstance(steps, list) or not all(
            isinstance(e, list) and e and all(isinstance(x, str) for x in e) for e in steps
        ):
            raise ValueError("steps should be a list of [name, version, code digest]")
        return definition

    def record(self) -> dict[str, Any]:
        """The commit as its JSON object (what `seal` writes, without the digest)."""
        out = dict(self)
        out["kind"] = self.kind.value
        out["progress"] = dict(self.progress) if self.progress is not None else None
        return out


class Stub(BaseModel):
    """What a cleanup leaves at an older commit's slot: an empty slot could be refilled by a stale writer."""

    model_config = ConfigDict(extra="forbid")

    seq: StrictInt = Field(ge=0)
    kind: Literal[Kind.STUB] = Kind.STUB
    checkpoint_version: StrictStr = CHECKPOINT_VERSION
    tombstone: StrictInt
    """The seq of the tombstone that retired the run."""

    def record(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "checkpoint_version": self.checkpoint_version,
            "tombstone": self.tombstone,
        }


Entry = Commit | Stub
"""Whatever a readable slot holds."""


@dataclass(frozen=True)
class Unreadable:
    """A slot whose object could not be read (in `RunLog.history`)."""

    seq: int
    error: str
    kind: None = None

    def record(self) -> dict[str, Any]:
        return {"seq": self.seq, "error": self.error}


def now() -> str:
    """UTC timestamp in the Kubernetes style."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_nonce() -> str:
    return uuid.uuid4().hex


def tombstone_of(newest: Entry | None, *, outcome: str) -> Commit:
    """The tombstone that retires a run whose newest commit is `newest`: the one builder
    the runtime (on success) and `pipeline-runtime cleanup` use. It keeps what fences and
    what `inspect` shows (attempt, steps, summary, definition) and drops the state. A run
    whose newest commit is unreadable or a stub is retired as attempt 0 of no pipeline."""
    if isinstance(newest, Commit):
        return newest.model_copy(
            update={
                "kind": Kind.TOMBSTONE,
                "at": now(),
                "nonce": new_nonce(),
                "outcome": outcome,
                "checkpoint_version": CHECKPOINT_VERSION,
                "context": None,
                "progress": None,
                "seq": 0,
            }
        )
    return Commit(
        kind=Kind.TOMBSTONE,
        at=now(),
        nonce=new_nonce(),
        outcome=outcome,
        attempt=0,
        pipeline_name="",
        run_guid="",
        completed_steps=[],
        steps_summary={},
    )


_REQUIRED = ("seq", "attempt", "kind", "pipeline_name", "run_guid", "completed_steps", "context", "steps_summary")


def _canonical(body: dict[str, Any]) -> bytes:
    # Key order is kept: a resumed step must see dicts in the order a clean run does.
    return json.dumps(body, separators=(",", ":")).encode()


def seal(entry: Entry) -> bytes:
    """The bytes of a commit: its canonical JSON with a sha256 `digest` of itself (without it) last."""
    return seal_record(entry.record())


def seal_record(record: dict[str, Any]) -> bytes:
    """`seal` for a JSON record, checked by nothing: for tests that forge commits a buggy
    writer could leave (the reader's checks must catch them); any old `digest` is replaced."""
    text = _canonical({k: v for k, v in record.items() if k != "digest"})
    digest = hashlib.sha256(text).hexdigest()
    return text[:-1] + f',"digest":"{digest}"}}'.encode()


def parse_commit(raw: bytes, where: str) -> Entry:
    """Parse and check one commit object: JSON, version, digest, fields and their types."""
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
    stub = body.get("kind") == Kind.STUB.value
    missing = [f for f in (("seq", "tombstone") if stub else _REQUIRED) if f not in body]
    if body.get("kind") == Kind.TOMBSTONE.value:
        missing = [f for f in missing if f != "context"]
    if missing:
        raise CorruptCheckpoint(f"{where} lacks {', '.join(missing)}")
    try:
        return Stub.model_validate(body) if stub else Commit.model_validate(body)
    except (ValidationError, RecursionError) as e:
        raise CorruptCheckpoint(f"{where}: {_first_problem(e)}") from None


def _first_problem(e: ValidationError | RecursionError) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    err = e.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "the commit"
    return f"{field}: {err['msg']} (found {str(err.get('input'))[:60]!r}; {len(e.errors())} problem(s) in all)"


__all__ = [
    "CHECKPOINT_VERSION",
    "FINISHED_KINDS",
    "Commit",
    "CorruptCheckpoint",
    "Entry",
    "Kind",
    "Progress",
    "Stub",
    "Unreadable",
    "new_nonce",
    "now",
    "parse_commit",
    "seal",
    "seal_record",
    "tombstone_of",
]

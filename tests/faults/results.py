"""What every fault scenario records, and where the report generator finds it.

Each scenario test calls `Results.record(...)` once per batch of runs, BEFORE it
asserts, so a failing scenario still shows up in the table with the runs that did
not finish correctly. The session writes all records as JSON to
$RESPAWN_RELIABILITY_OUT, or to `reliability.json` in pytest's base temp folder
(never into the work tree); `python -m tests.faults.report` turns them into the
table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUT_ENV = "RESPAWN_RELIABILITY_OUT"
"""Path of the JSON results file the session writes."""


@dataclass
class Record:
    """One batch of runs of one scenario."""

    scenario: str
    """Row of the table, e.g. "Random kills (file://)"."""
    runs: int
    """Independent runs (each one a whole pipeline run, or one bad input)."""
    faults: int
    """Faults injected: kills, refused requests, dropped connections, bad inputs ..."""
    correct: int
    """Runs that ended as the contract says (byte-identical output, right exit code ...)."""
    lost: int = 0
    """Committed steps or progress that a later attempt did not see."""
    duplicates: int = 0
    """Steps that ran again although their commit had landed, or commits by a fenced attempt."""
    test: str = ""
    details: list[str] = field(default_factory=list)
    note: str = ""
    """Shown in the table, e.g. the known bug an xfail test pins down."""


class Results:
    """Collects Records from every test of the session (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def record(
        self,
        scenario: str,
        *,
        runs: int,
        faults: int,
        correct: int,
        lost: int = 0,
        duplicates: int = 0,
        test: str = "",
        details: list[str] | None = None,
        note: str = "",
    ) -> Record:
        rec = Record(scenario, runs, faults, correct, lost, duplicates, test, list(details or [])[:20], note)
        with self._lock:
            self.records.append(rec)
            self._write()
        return rec

    def _write(self) -> None:
        # Written after every record: a session killed by a timeout keeps what it had.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sizes": sizes(), "records": [asdict(r) for r in self.records]}, indent=1))
        os.replace(tmp, self.path)


def sizes() -> dict[str, str]:
    """The RESPAWN_FAULT_* settings of this session (sizes, seed)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("RESPAWN_FAULT_")}


def load(path: Path) -> tuple[list[Record], dict[str, str]]:
    """(records, sizes) of one results file."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return [Record(**r) for r in data["records"]], dict(data.get("sizes", {}))


def runs_from_env(name: str, default: int) -> int:
    """Size of a sweep: $NAME if set (the slow marker's full size otherwise applies)."""
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default

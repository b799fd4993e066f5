"""Parse what a pod tells us: the termination message and the live progress annotation.

Both come from a process we do not control (an old runtime, a crash, a user's own
image), so parsing is defensive: anything unexpected yields ``None``, never an error.
"""

from __future__ import annotations

import json
from typing import Any

from respawn_operator.spec import CheckpointRef


def parse_report(text: str | None) -> dict[str, Any] | None:
    """Parse a one-line JSON report; with ``FallbackToLogsOnError`` the message may be log
    lines, so the last line that parses as a JSON object wins."""
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def progress_fields(report: dict[str, Any] | None) -> dict[str, Any]:
    """Status fields (snake_case) carried by a progress annotation or termination report."""
    if not report:
        return {}
    out: dict[str, Any] = {}
    step = _str(report.get("currentStep", report.get("step")))
    if step is not None:
        out["current_step"] = step
    done, total = _int(report.get("completedSteps")), _int(report.get("totalSteps"))
    if done is not None:
        out["completed_steps"] = done
    if total is not None:
        out["total_steps"] = total
    last = report.get("lastCheckpoint")
    if isinstance(last, dict):
        ref = CheckpointRef(
            step=_str(last.get("step")),
            seq=_int(last.get("seq")),
            at=_str(last.get("at")),
            uri=_str(last.get("uri")),
            attempt=_int(last.get("attempt")) or _int(report.get("attempt")),
        )
        if ref.step or ref.seq is not None:
            out["last_checkpoint"] = ref
    return out

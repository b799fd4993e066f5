"""What a person watching a run sees: the terminal view, and the JSON log lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console

from pipeline_runtime import Pipeline, StepContext, step
from pipeline_runtime.reporting import Reporter


class Counted(Pipeline):
    name = "counted"
    output_param = "out"

    class Params(BaseModel):
        out: str = "file:///tmp/somewhere"
        n: int = 50

    @step
    def first(self, ctx: StepContext) -> None:
        for i in range(ctx.params.n):
            ctx.report(i + 1, ctx.params.n, "items")
        ctx["first"] = ctx.params.n

    @step
    def second(self, ctx: StepContext) -> None:
        ctx["second"] = ctx["first"] + 1


def terminal_reporter() -> tuple[Reporter, io.StringIO]:
    reporter = Reporter(tty=False)
    screen = io.StringIO()
    reporter.tty = True
    reporter._console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    return reporter, screen


def test_a_terminal_shows_progress_inside_a_step_each_checkpoints_step_and_where_the_output_is(
    tmp_path: Path,
) -> None:
    reporter, screen = terminal_reporter()
    Counted({}, checkpoint_uri=f"file://{tmp_path}/ck", run_id="r", on_event=reporter, retain="Always").run()
    reporter.close()
    text = screen.getvalue()
    assert "[1/2] first" in text and "50/50 items" in text, text  # the in-step bar reached its end
    assert "checkpoint #2: step first done" in text and "checkpoint #3: step second done" in text, text
    assert "output: file:///tmp/somewhere" in text, text
    assert f"checkpoint kept: file://{tmp_path}/ck/default/r/" in text, text
    assert "None" not in text, text


def test_json_logs_get_few_progress_lines_and_the_last_one_of_a_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = Reporter(tty=False)
    Counted({"n": 2000}, checkpoint_uri=f"file://{tmp_path}/ck", run_id="r", on_event=reporter).run()
    reporter.close()
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "step_progress"]
    assert 1 <= len(progress) <= 3, progress  # 2000 reports in well under 5 s: the first and the last
    assert progress[-1]["done"] == 2000 and progress[-1]["step"] == "first", progress
    succeeded = next(e for e in events if e["event"] == "succeeded")
    assert succeeded["output"] == "file:///tmp/somewhere", succeeded
    assert "checkpoint" not in succeeded, succeeded  # retain OnFailure: a success leaves only a tombstone


def test_report_is_display_only_it_commits_nothing(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    Counted({}, checkpoint_uri=f"file://{tmp_path}/a", run_id="r", on_event=lambda e, f: seen.append((e, f))).run()
    kinds = [f["kind"] for e, f in seen if e == "commit"]
    assert kinds == ["claim", "step", "step", "final"], kinds  # no progress commit came from a report
    assert any(e == "step_progress" for e, _ in seen)

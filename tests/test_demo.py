"""The README's first command: `respawn-demo` runs the whole system and shows the resume."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import VENV_BIN


def test_demo_preempts_and_resumes(tmp_path: Path) -> None:
    done = subprocess.run([str(VENV_BIN / "respawn-demo"), "--dir", str(tmp_path / "demo"),
                           "--frames", "1500"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Preempted (TerminationByKubelet)" in out
    assert "Succeeded (Succeeded), resumed after step" in out
    assert "it skipped open_video" in out
    # The table as kubectl prints it; the run ends with 6/6 steps and one preemption.
    assert re.search(r"NAME\s+PHASE\s+STEP\s+CURRENT\s+PREEMPTIONS\s+FAILURES\s+AGE", out)
    assert re.search(r"dataprep-video-42\s+Succeeded\s+6/6\s+1\s+0\s", out)
    manifest = tmp_path / "demo" / "dataset" / "manifest.jsonl"
    assert manifest.exists() and manifest.read_text().count("\n") > 0

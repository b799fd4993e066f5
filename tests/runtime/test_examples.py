"""examples/custom_pipeline.py runs as documented, and resumes after SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from respawn_local.testkit import wait_for

from tests.runtime.conftest import ROOT, Runtime


@pytest.mark.slow
def test_custom_pipeline_example_runs_and_resumes(runtime: Runtime, tmp_path: Path) -> None:
    env = {"PYTHONPATH": f"{ROOT / 'examples'}:{ROOT}", "RESPAWN_PROGRESS_INTERVAL_SECONDS": "0"}
    out, clean = tmp_path / "thumbs.npz", tmp_path / "clean.npz"
    args = ["run", "custom_pipeline:Thumbnails", "--checkpoint-uri", f"file://{tmp_path}/ck"]
    code, text, _ = runtime.run(
        [*args, "--run-id", "clean", "--params", f'{{"n": 3000, "size": 128, "out": "{clean}"}}'], env=env
    )
    assert code == 0, text
    params = f'{{"n": 3000, "size": 128, "out": "{out}"}}'
    proc = runtime.start([*args, "--run-id", "t", "--params", params, "--retain", "Always"], env=env)
    ck = tmp_path / "ck" / "default" / "t" / "commits"
    # Progress commits appear while `shrink` runs; stop it then.
    wait_for(lambda: ck.exists() and len(list(ck.iterdir())) >= 4, 60, "progress commits")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, 143)
    code, text, _ = runtime.run([*args, "--run-id", "t", "--params", params], env=env)
    assert code == 0, text
    assert np.array_equal(np.load(out)["small"], np.load(clean)["small"])
    code, _, term = runtime.run([*args, "--run-id", "odd", "--params", '{"size": 63}'], env=env)
    assert code == 64 and term is not None and term["message"].startswith("size:")


def test_the_readme_pipeline_snippet_runs_and_resumes(tmp_path: Path) -> None:
    """The README's "Writing a pipeline" block, as a user saves it: run twice, then loaded by the CLI."""
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("## Writing a pipeline") :].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "mypipe.py").write_text(block.replace("file:///tmp/ckpt", f"file://{tmp_path}/ckpt"))
    runs = [
        subprocess.run([sys.executable, "mypipe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]
    assert [r.stdout.strip().splitlines()[-1] for r in runs] == ["['load', 'shrink'] []", "[] ['load', 'shrink']"]
    loaded = subprocess.run(
        [str(Path(sys.executable).parent / "pipeline-runtime"), "run", "mypipe:Thumbnails", "--checkpoint-uri", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0 and "['load', 'shrink']" not in loaded.stdout  # importing it runs nothing


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    """Step 1 and 2 of "A 5-minute tour", command by command, in an empty folder: the clip is
    made, the run finishes, the same command again resumes (skips everything), inspect works."""
    import re
    import shlex
    import subprocess

    from tests.conftest import VENV_BIN

    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## A 5-minute tour") :]
    blocks = re.findall(r"```sh\n(.*?)```", tour, re.S)[:2]
    commands = [c.strip() for block in blocks for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    assert commands[0].startswith(".venv/bin/python -m respawn_local.sample_video clip.mp4")
    import os

    env = {**os.environ, "PWD": str(tmp_path)}
    outputs = []
    for command in [*commands[:3], commands[2], *commands[3:]]:  # the run twice: "run the same command again"
        argv = [
            a.replace(".venv/bin/", f"{VENV_BIN}/").replace("$PWD", str(tmp_path))
            for a in shlex.split(command, comments=True)
        ]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    assert (tmp_path / "out" / "clip1" / "manifest.jsonl").exists()
    import json

    events = [json.loads(line) for line in outputs[3].splitlines() if line.startswith('{"event"')]
    start = next(e for e in events if e["event"] == "start")
    assert start["completed"] == start["total"] == 6 and start["resumed_from"], outputs[3]
    assert not [e for e in events if e["event"] == "step_start"], "the same command again ran steps"
    assert "completed: open_video" in outputs[4]

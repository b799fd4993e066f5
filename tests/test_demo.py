"""The README's first command: `respawn-demo` runs the whole system and shows the resume."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow  # the demo, run end to end


def test_demo_preempts_and_resumes_and_keeps_the_cluster_up_for_kubectl(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [str(VENV_BIN / "respawn-demo"), "--dir", str(tmp_path / "demo"), "--frames", "1500", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a failure can stop all it started
    )
    lines: list[str] = []
    # A thread reads the output, so a demo that hangs without printing still meets the deadline.
    output: queue.Queue[str] = queue.Queue()
    assert demo.stdout is not None
    stdout = demo.stdout

    def read() -> None:
        for line in iter(stdout.readline, ""):
            output.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not lines or "Ctrl-C stops it." not in lines[-1]:  # --keep: it waits for us now
            try:
                line = output.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no 'Ctrl-C stops it.' within 240 s:\n" + "".join(lines)) from None
            lines.append(line)
        out = "".join(lines)
        assert "Preempted (TerminationByKubelet)" in out
        assert "Succeeded (Succeeded), resumed after step" in out
        assert "it skipped open_video" in out
        # The table as kubectl prints it; the run ends with 6/6 steps and one preemption.
        assert re.search(r"NAME\s+PHASE\s+ITEMS\s+STEP\s+CURRENT\s+PREEMPTIONS\s+FAILURES\s+AGE", out)
        assert re.search(r"dataprep-video-42\s+Succeeded\s+6/6\s+1\s+0\s", out)
        manifest = tmp_path / "demo" / "dataset" / "manifest.jsonl"
        assert manifest.exists() and manifest.read_text().count("\n") > 0
        # The reclaimed node left, a new one joined, and attempt 2 ran elsewhere.
        nodes = re.findall(r"  #(\d) on (\S+) \(spot", out)
        assert len(nodes) == 2 and nodes[0][1] != nodes[1][1], out
        gone = nodes[0][1]
        assert f"Node {gone} left the cluster" in out, out
        # Still up: the emulator answers with the demo's kubeconfig, as kubectl would use it.
        from kubernetes import client, config

        kubeconfig = str(tmp_path / "demo" / "kubeconfig")
        api = config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
        names = {n.to_dict()["metadata"]["name"] for n in client.CoreV1Api(api).list_node().items}
        assert gone not in names and len(names) == 3, names
        run = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "respawn.dev", "v1alpha1", "default", "pipelineruns", "dataprep-video-42"
        )
        assert isinstance(run, dict) and run["status"]["phase"] == "Succeeded"
        api.close()
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)  # the demo and the operator it started: leave nothing behind
            demo.wait()
            lines.append("\n(still running 60 s after SIGINT: killed)")
        reader.join(timeout=30)  # EOF once the demo has exited
        tail: list[str] = []
        while not output.empty():
            tail.append(output.get_nowait())
        rest = "".join(tail)
    assert demo.returncode == 0, "".join(lines) + rest
    assert "Stopped." in rest


def test_the_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    from respawn_local.demo import DEMO_MARKER, prepare_folder

    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    problem = prepare_folder(mine)
    assert problem is not None and "not a demo folder" in problem
    assert (mine / "chapter1.tex").read_text() == "years of work"
    assert "a file" in (prepare_folder(mine / "chapter1.tex") or "")
    demo = tmp_path / "demo"
    assert prepare_folder(demo) is None and (demo / DEMO_MARKER).is_file()  # new: made
    (demo / "old-output.txt").write_text("x")
    assert prepare_folder(demo) is None and not (demo / "old-output.txt").exists()  # a demo's: emptied
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_folder(empty) is None


def test_a_short_video_finishes_without_a_traceback_and_says_why_nothing_was_preempted(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "respawn-demo"), "--dir", str(tmp_path / "demo"), "--frames", "60"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "give --frames more frames" in done.stdout or "Preempted" in done.stdout
    assert re.search(r"dataprep-video-42\s+Succeeded\s+6/6", done.stdout)


def test_the_fan_out_demo_runs_one_child_per_video_and_resumes_the_reclaimed_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "respawn-demo"), "--dir", str(tmp_path / "demo"), "--fanout", "3", "--frames", "900"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    out = done.stdout
    assert "Items: 3/3 succeeded, 0 failed." in out, out
    assert re.search(r"clips-12\s+Succeeded\s+3/3", out), out  # the parent's row: ITEMS done/total
    datasets = sorted((tmp_path / "demo" / "datasets").iterdir())
    assert len(datasets) == 3 and all((d / "manifest.jsonl").read_text().count("\n") > 0 for d in datasets)
    if "is reclaimed" in out:  # an item's pod was caught inside the step: it resumed
        assert re.search(r"Item clips-12-\w+ was preempted and attempt 2 resumed after", out), out
    else:
        assert "Preemptions: 0" in out, out


def test_the_demo_outside_a_checkout_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed from a wheel there is no examples/ next to the package: one line, exit 2,
    and nothing made (no folder, no emulator)."""
    from respawn_local import demo

    monkeypatch.setattr(demo, "EXAMPLE", tmp_path / "no-checkout" / "examples" / "dataprep-run.yaml")
    assert demo.main(["--dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "checkout of the Respawn repository" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()

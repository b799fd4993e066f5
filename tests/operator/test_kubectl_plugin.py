"""`kubectl respawn` (respawn_operator.kubectl_plugin) as a real process against the API
emulator, with the real operator and the pod simulator running op_pipelines:Steps.

The plugin gets only a kubeconfig, as a user would: HTTPS, a bearer token, RBAC.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from respawn_local.testkit import free_port

from tests.operator.harness import NS, Cluster, items, running_cluster, submit_parent

pytestmark = pytest.mark.slow  # runs driven end to end through `kubectl respawn`

PLUGIN = [sys.executable, "-m", "respawn_operator.kubectl_plugin"]
SUBCOMMANDS = ["get", "watch", "logs", "describe", "suspend", "resume", "rerun"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("plugin"), RESPAWN_METRICS_PORT=str(free_port())) as c:
        yield c


def plugin_env(kubeconfig: str) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": kubeconfig}


def respawn(cluster: Cluster, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLUGIN, *args],
        env=plugin_env(kubeconfig or cluster.kubeconfig),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A user's mistake: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by NAME (the first column)."""
    return {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}


def test_get_shows_progress_bars_and_a_parents_item_counts(cluster: Cluster) -> None:
    cluster.submit("quick", {"step_s": 0.05})
    submit_parent(cluster, "fan", items([cluster.tmp / "fan-0.out", cluster.tmp / "fan-1.out"]))
    cluster.wait_phase("quick", "Succeeded")
    cluster.wait_phase("fan", "Succeeded", timeout=120)
    out = ok(respawn(cluster, "get"))
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "ITEMS", "CURRENT", "ATTEMPT", "PREEMPTIONS", "FAILURES", "AGE"]
    table = rows(out)
    assert table["quick"][1:5] == ["Succeeded", "[##########]", "5/5", "steps"]
    assert table["fan"][1:5] == ["Succeeded", "[##########]", "2/2", "items"]
    assert " ".join(table["fan"][5:11]) == "0 running, 0 pending, 0 failed"
    assert not [n for n in table if n.startswith("fan-")], "children are counted by the parent, not listed"
    children = [n for n in rows(ok(respawn(cluster, "get", "--children"))) if n.startswith("fan-")]
    assert len(children) == 2
    assert "\033[" not in out  # not a terminal: no colours
    everywhere = ok(respawn(cluster, "get", "-A", "quick"))
    assert everywhere.splitlines()[0].split()[0] == "NAMESPACE" and rows(everywhere)[NS][1] == "quick"


def test_watch_describe_and_logs_tell_the_story_of_a_preemption(cluster: Cluster) -> None:
    cluster.submit("story", {"step_s": 0.5})
    watch = subprocess.Popen(
        [*PLUGIN, "watch", "story", "--timeout", "120", "--interval", "0.2"],
        env=plugin_env(cluster.kubeconfig),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cluster.wait_status("story", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
        cluster.sim.preempt(cluster.running_pod("story", 1), NS, reason="TerminationByKubelet", grace=10)
        cluster.wait_phase("story", "Succeeded")
        stdout, stderr = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 0, stderr
    assert "attempt #1 on " in stdout and ": Preempted (TerminationByKubelet)" in stdout
    assert "resumed after " in stdout and "preemptions 1" in stdout
    assert stdout.splitlines()[-1].split()[1] == "Succeeded"

    described = ok(respawn(cluster, "describe", "story"))
    timeline = described.split("Attempts:\n")[1].split("Conditions:")[0].splitlines()
    assert timeline[0].split() == ["#", "NODE", "SPOT", "OUTCOME", "REASON", "STARTED", "DURATION", "RESUMED", "FROM"]
    first, second = timeline[1].split(), timeline[2].split()
    st = cluster.status("story")
    spot = ["yes" if a["spot"] else "no" for a in st["attempts"]]
    assert first[:5] == ["1", st["attempts"][0]["node"], spot[0], "Preempted", "TerminationByKubelet"]
    assert second[:4] == ["2", st["attempts"][1]["node"], spot[1], "Succeeded"]
    assert second[-1] == st["attempts"][1]["resumedFrom"] and first[-1] == "-"
    assert "Preemptions:   1" in described and "[##########] 5/5 steps" in described

    logs = ok(respawn(cluster, "logs", "story"))
    headers = [line for line in logs.splitlines() if line.startswith("==> attempt")]
    assert [h.split()[2] for h in headers] == ["#1", "#2"]
    assert "Preempted" in headers[0] and "Succeeded" in headers[1]
    one, two = logs.split(headers[1])
    assert '"step_start"' in one and '"attempt": 1' in one
    assert '"attempt": 2' in two and '"resumed_from": {"seq"' in two
    assert '"step": "a", "index": 1' in one and '"step": "a", "index": 1' not in two  # attempt 2 skipped a
    only = ok(respawn(cluster, "logs", "story", "--attempt", "2"))
    assert [line.split()[2] for line in only.splitlines() if line.startswith("==>")] == ["#2"]
    assert "no attempt 7 (attempts: 1, 2)" in one_line_error(respawn(cluster, "logs", "story", "--attempt", "7"))


def test_logs_follow_streams_until_the_run_ends(cluster: Cluster) -> None:
    cluster.submit("tail", {"step_s": 0.3})
    cluster.wait_status("tail", lambda st: st.get("attempt") == 1, "attempt 1")
    out = ok(respawn(cluster, "logs", "tail", "-f"))
    assert cluster.status("tail")["phase"] == "Succeeded"
    assert out.startswith("==> attempt #1") and out.count('"step_start"') == 5 and '"succeeded"' in out


def test_suspend_then_resume(cluster: Cluster) -> None:
    cluster.submit("nap", {"step_s": 0.6})
    cluster.wait_status("nap", lambda st: (st.get("completedSteps") or 0) >= 1, "a first commit")
    assert "pipelineruns.respawn.dev/nap suspended" in ok(respawn(cluster, "suspend", "nap"))
    assert cluster.run("nap")["spec"]["suspend"] is True
    st = cluster.wait_phase("nap", "Suspended")
    assert [a["outcome"] for a in st["attempts"]] == ["Stopped"]
    # A suspended run never ends by itself: Ctrl-C stops the watch, with 130 and no traceback.
    watch = subprocess.Popen(
        [*PLUGIN, "watch", "nap"], env=plugin_env(cluster.kubeconfig), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert watch.stdout is not None and b"Suspended" in watch.stdout.readline()
        watch.send_signal(signal.SIGINT)
        _, stderr = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 130 and stderr == b""
    assert "resumed" in ok(respawn(cluster, "resume", "nap"))
    st = cluster.wait_phase("nap", "Succeeded")
    assert st["attempts"][1]["resumedFrom"] and [s for s, _ in cluster.executions("nap")].count("a") == 1


def test_rerun_from_a_step_and_an_unknown_step(cluster: Cluster) -> None:
    cluster.submit("redo", {"step_s": 0.05}, checkpoint={"retain": "Always"})
    cluster.wait_phase("redo", "Succeeded")
    error = one_line_error(respawn(cluster, "rerun", "redo", "--from", "zz"))
    assert "redo has no step 'zz'; its steps are a, b, c, d, e" in error
    assert "rerunFrom" not in cluster.run("redo")["spec"]
    assert "re-runs from step d" in ok(respawn(cluster, "rerun", "redo", "--from", "d"))
    cluster.wait_status("redo", lambda st: st.get("attempt") == 2 and st.get("phase") == "Succeeded", "the re-run")
    # The same step again: the plugin clears rerunFrom first, so the operator sees a new request.
    ok(respawn(cluster, "rerun", "redo", "--from", "d"))
    st = cluster.wait_status(
        "redo", lambda st: st.get("attempt") == 3 and st.get("phase") == "Succeeded", "the second re-run"
    )
    assert st["attempts"][2]["rerunFrom"] == "d"
    ran = [s for s, _ in cluster.executions("redo")]
    assert (ran.count("a"), ran.count("c"), ran.count("d"), ran.count("e")) == (1, 1, 3, 3)


def test_user_mistakes_are_one_line_errors(cluster: Cluster, tmp_path: Path) -> None:
    assert 'pipelineruns.respawn.dev "nope" not found' in one_line_error(respawn(cluster, "describe", "nope"))
    assert "not found" in one_line_error(respawn(cluster, "suspend", "nope"))
    cluster.submit("idle", suspend=True)
    cluster.wait_phase("idle", "Suspended")
    assert "idle has no attempts yet (phase Suspended)" in one_line_error(respawn(cluster, "logs", "idle"))
    missing = str(tmp_path / "no-such-kubeconfig")
    assert "kubeconfig" in one_line_error(respawn(cluster, "get", kubeconfig=missing))


def test_a_user_without_rbac_for_pipelineruns_is_told_it_is_forbidden(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "intern", "namespace": NS}})
    token = cluster.api.service_account_token(NS, "intern")
    kubeconfig = cluster.api.write_kubeconfig(str(tmp_path / "intern.kubeconfig"), token=token)
    error = one_line_error(respawn(cluster, "get", kubeconfig=kubeconfig))
    assert "forbidden" in error and "system:serviceaccount:default:intern" in error
    assert "forbidden" in one_line_error(respawn(cluster, "suspend", "quick", kubeconfig=kubeconfig))


def test_every_subcommand_has_help() -> None:
    for cmd in SUBCOMMANDS:
        result = subprocess.run([*PLUGIN, cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and f"kubectl respawn {cmd}" in result.stdout, result.stderr
    top = subprocess.run([*PLUGIN, "--help"], capture_output=True, text=True, timeout=60)
    assert all(cmd in top.stdout for cmd in SUBCOMMANDS)


def test_kubectl_finds_the_plugin_on_path(cluster: Cluster, tmp_path: Path) -> None:
    """What `pip install` provides: an executable `kubectl-respawn` on PATH, run by kubectl."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "kubectl-respawn"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m respawn_operator.kubectl_plugin "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    cluster.submit("found", {"step_s": 0.05})
    cluster.wait_phase("found", "Succeeded")
    env = {**plugin_env(cluster.kubeconfig), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["kubectl", "respawn", "get", "found"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)["found"][1:3] == ["Succeeded", "[##########]"]


def test_krew_manifest_installs_the_console_script() -> None:
    """plugins/respawn.yaml is a krew Plugin whose binary is the console script pip installs."""
    import tomllib

    import yaml

    from tests.operator.harness import ROOT

    manifest = yaml.safe_load((ROOT / "plugins" / "respawn.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and manifest["kind"] == "Plugin"
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "respawn" and spec["version"].startswith("v") and spec["shortDescription"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-respawn"] == "respawn_operator.kubectl_plugin:main"
    for platform in spec["platforms"]:
        assert platform["bin"] == "kubectl-respawn" and platform["uri"].startswith("https://")
        assert len(platform["sha256"]) == 64 and platform["selector"]["matchExpressions"]

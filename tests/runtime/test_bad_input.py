"""Bad input: clear messages, the right exit code, nothing lost, no crash loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.runtime.conftest import Runtime

CHAIN = "tests.runtime.pipelines_for_tests:Chain"
BROKEN = "tests.runtime.pipelines_for_tests:Broken"


def small_chain(uri: str, *extra: str, run_id: str = "r1") -> list[str]:
    return [
        "run",
        CHAIN,
        "--params",
        '{"mb": 1, "work_s": 0}',
        "--run-id",
        run_id,
        "--checkpoint-uri",
        uri,
        "--retain",
        "Always",
        *extra,
    ]


def test_invalid_params_exit_64_naming_the_field(runtime: Runtime, tmp_path: Path) -> None:
    code, out, term = runtime.run(
        ["run", CHAIN, "--params", '{"mb": "lots"}', "--checkpoint-uri", f"file://{tmp_path}"]
    )
    assert code == 64
    assert term is not None and term["reason"] == "InvalidInput"
    assert term["message"].startswith("invalid params for pipeline 'chain': mb:")
    code, _, term = runtime.run(["run", CHAIN, "--params", '{"colour": 1}', "--checkpoint-uri", f"file://{tmp_path}"])
    assert code == 64 and term is not None and "colour" in term["message"]


def test_unknown_pipeline_exit_64_lists_what_exists(runtime: Runtime) -> None:
    code, out, term = runtime.run(["run", "no-such-pipeline"])
    assert code == 64
    assert term is not None and "dataprep" in term["message"]
    code, _, term = runtime.run(["run", "tests.runtime.nope:Nope"])
    assert code == 64 and term is not None and "cannot import module" in term["message"]


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "-x", "a b"])
def test_hostile_run_ids_and_tenants_are_refused(runtime: Runtime, tmp_path: Path, bad: str) -> None:
    code, _, term = runtime.run(small_chain(f"file://{tmp_path}/ck", f"--tenant={bad}"))
    assert code == 64 and term is not None and "tenant" in term["message"]
    args = small_chain(f"file://{tmp_path}/ck")
    args[args.index("--run-id") : args.index("--run-id") + 2] = [f"--run-id={bad}"]
    code, _, term = runtime.run(args)
    assert code == 64 and term is not None and "run id" in term["message"]
    assert not (tmp_path / "escape").exists()


def test_usage_error_exit_64(runtime: Runtime) -> None:
    code, _, term = runtime.run(["run", CHAIN, "--attempt", "many"])
    assert code == 64 and term is not None and "attempt" in term["message"]
    for bad in ("0", "-3"):
        code, _, term = runtime.run(["run", CHAIN, f"--attempt={bad}"])
        assert code == 64 and term is not None and term["message"].startswith("attempt:")


@pytest.mark.parametrize("command", [["run", CHAIN], ["inspect", "file:///tmp/x", "--run-id", "r"]])
def test_a_bad_flag_after_a_command_shows_that_commands_usage(runtime: Runtime, command: list[str]) -> None:
    code, text, term = runtime.run([*command, "--no-such-flag"])
    assert code == 64 and term is not None and "--no-such-flag" in term["message"], text
    assert f"usage: pipeline-runtime {command[0]} " in text, text  # not the top-level `COMMAND ...` usage


def test_help_names_the_defaults_and_has_no_markup() -> None:
    import subprocess

    from tests.conftest import VENV_BIN

    texts = {}
    for command in ([], ["run"], ["inspect"], ["cleanup"], ["chaos"], ["params"]):
        done = subprocess.run(
            [str(VENV_BIN / "pipeline-runtime"), *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "`" not in done.stdout, f"{command}: {done.stdout}"
        texts[" ".join(command)] = " ".join(done.stdout.split())
    for words in (
        "a new random id",
        "default: file://$PWD/.respawn/checkpoints",
        "(default: default)",
        "(default Compatible)",
        "(default OnFailure)",
    ):
        assert words in texts["run"], words


def test_unsupported_checkpoint_scheme_exit_64(runtime: Runtime) -> None:
    code, _, term = runtime.run(small_chain("s3://bucket/x"))
    assert code == 64 and term is not None and "file://" in term["message"]


def truncate_latest(ck: Path) -> Path:
    commits = sorted((ck / "default" / "r1" / "commits").iterdir())
    commits[-1].write_bytes(commits[-1].read_bytes()[:40])
    return commits[-1]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["Strict", "Compatible"])
def test_truncated_checkpoint_is_a_clear_error(runtime: Runtime, tmp_path: Path, policy: str) -> None:
    uri, ck = f"file://{tmp_path}/ck", tmp_path / "ck"
    assert runtime.run(small_chain(uri))[0] == 0
    truncate_latest(ck)
    code, out, term = runtime.run(small_chain(uri, "--resume-policy", policy))
    assert code == 65
    assert term is not None and "not valid JSON" in term["message"]
    assert "Traceback" not in out
    # Asked again (an operator retry), the answer is the same: no crash loop, no damage.
    code, _, again = runtime.run(small_chain(uri, "--resume-policy", policy))
    assert code == 65 and again is not None and again["message"] == term["message"]


def test_truncated_checkpoint_under_restart_starts_over(runtime: Runtime, tmp_path: Path) -> None:
    uri, ck = f"file://{tmp_path}/ck", tmp_path / "ck"
    assert runtime.run(small_chain(uri))[0] == 0
    damaged = truncate_latest(ck)
    code, out, _ = runtime.run(small_chain(uri, "--resume-policy", "Restart"))
    assert code == 0, out
    info = runtime.inspect(uri, "r1")
    assert info["completed_steps"] == ["a", "b", "c", "d", "e"]
    claim = [h for h in info["history"] if h["kind"] == "claim"][-1]
    assert claim["seq"] > int(damaged.stem) and claim["completed"] == 0


def test_damaged_artifact_is_reported(runtime: Runtime, tmp_path: Path) -> None:
    uri, ck = f"file://{tmp_path}/ck", tmp_path / "ck"
    proc_args = small_chain(uri, "--retain", "Always")
    assert runtime.run(proc_args)[0] == 0
    for artifact in (ck / "default" / "r1" / "artifacts").rglob("*"):
        if artifact.is_file() and artifact.stat().st_size > 1000:
            artifact.write_bytes(b"\0" * artifact.stat().st_size)
    code, _, term = runtime.run(small_chain(uri, "--rerun-from", "e"))
    assert code == 65 and term is not None and "damaged" in term["message"]


def test_foreign_checkpoint_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    code, _, _ = runtime.run(["run", BROKEN, "--run-id", "r1", "--checkpoint-uri", uri])
    assert code == 1
    code, _, term = runtime.run(small_chain(uri))
    assert code == 65
    assert term is not None and "belongs to pipeline 'broken'" in term["message"]


def test_changed_definition_strict_refuses_compatible_keeps_prefix(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    assert runtime.run(small_chain(uri))[0] == 0
    changed = tmp_path / "changed.py"
    changed.write_text(
        "from pipeline_runtime import step\n"
        "from tests.runtime.pipelines_for_tests import Chain\n"
        "class Changed(Chain):\n"
        "    @step(version='2')\n"
        "    def c(self, ctx):\n"
        "        Chain.c(self, ctx)\n"
    )
    args = [
        "run",
        "changed:Changed",
        "--params",
        '{"mb": 1, "work_s": 0}',
        "--run-id",
        "r1",
        "--checkpoint-uri",
        uri,
        "--retain",
        "Always",
        "--attempt",
        "5",
    ]
    env = {"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[2]}"}
    code, _, term = runtime.run([*args, "--resume-policy", "Strict"], env=env)
    assert code == 65 and term is not None and "Strict refuses" in term["message"]
    code, out, _ = runtime.run([*args, "--resume-policy", "Compatible"], env=env)
    assert code == 0, out
    reran = [s for s, a, _ in runtime.executions() if a == 5]
    assert reran == ["c", "d", "e"]


def test_rerun_from_discards_that_step_and_later_ones(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    assert runtime.run(small_chain(uri))[0] == 0
    first = runtime.inspect(uri, "r1")
    code, out, _ = runtime.run(small_chain(uri, "--rerun-from", "d"))
    assert code == 0, out
    second = runtime.inspect(uri, "r1")
    assert [s for s, a, _ in runtime.executions() if a == 2] == ["d", "e"]
    assert second["context"] == first["context"]
    claim = [h for h in second["history"] if h["kind"] == "claim"][-1]
    assert claim["resumed_from"]["step"] == "c"
    code, _, term = runtime.run(small_chain(uri, "--rerun-from", "zzz"))
    assert code == 64 and term is not None and "a, b, c, d, e" in term["message"]


def test_inspect_json_has_seed_fields_and_history(runtime: Runtime, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/ck"
    assert runtime.run(small_chain(uri))[0] == 0
    info = runtime.inspect(uri, "r1")
    for key in (
        "pipeline_name",
        "run_guid",
        "completed_steps",
        "context",
        "steps_summary",
        "checkpoint_version",
        "attempt",
        "history",
    ):
        assert key in info
    assert info["context"]["x1"]["type"] == "ndarray"
    assert info["context"]["x1"]["shape"] == [1024 * 1024]
    assert [h["kind"] for h in info["history"]] == ["claim"] + ["step"] * 5 + ["final"]
    assert all({"seq", "attempt", "step", "at"} <= set(h) for h in info["history"])
    json.dumps(info)


def test_cleanup_never_follows_a_symlink_out_of_the_store(runtime: Runtime, tmp_path: Path) -> None:
    """A run whose artifacts/ folder is a symlink: cleanup refuses it (64) and deletes nothing outside."""
    uri = f"file://{tmp_path}/ck"
    code, text, _ = runtime.run(
        [
            "run",
            "tests.runtime.pipelines_for_tests:Chain",
            "--params",
            '{"mb": 0}',
            "--run-id",
            "sym",
            "--checkpoint-uri",
            uri,
            "--retain",
            "Always",
        ]
    )
    assert code == 0, text
    outside = tmp_path / "precious" / "ab"
    outside.mkdir(parents=True)
    (outside / "abcd").write_text("keep me")
    artifacts = tmp_path / "ck" / "default" / "sym" / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.symlink_to(tmp_path / "precious")
    code, text, _ = runtime.run(["cleanup", uri, "--run-id", "sym"])
    assert code == 64 and "symlink" in text and "Traceback" not in text, text
    assert (outside / "abcd").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["inspect", "s3://bucket/x", "--run-id", "r"], 64, "known schemes"),
        (["inspect", "file:///tmp/x", "--run-id", "../up"], 64, "run id"),
        (["cleanup", "file:///tmp/x", "--run-id", "r", "--tenant", "a/b"], 64, "tenant"),
        (["inspect", "file:///nonexistent-respawn", "--run-id", "r"], 2, "no checkpoint"),
    ],
)
def test_inspect_and_cleanup_answer_bad_input_in_one_line(
    runtime: Runtime, args: list[str], code: int, says: str
) -> None:
    got, text, _ = runtime.run(args)
    assert got == code and says in text and "Traceback" not in text, text


def test_a_pipeline_module_that_fails_to_load_is_invalid_input(runtime: Runtime, tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text("def broken(:\n")
    code, text, term = runtime.run(
        ["run", "broken_module:Thing", "--checkpoint-uri", "none"], env={"PYTHONPATH": f"{tmp_path}"}
    )
    assert code == 64 and "Traceback" not in text
    assert term is not None and "SyntaxError" in term["message"] and "broken_module" in term["message"]


def test_a_pipeline_module_next_to_the_command_is_found_without_pythonpath(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.conftest import VENV_BIN

    (tmp_path / "mypipe.py").write_text(
        "from pipeline_runtime import Pipeline, step\n"
        "class Blur(Pipeline):\n"
        "    @step\n"
        "    def only(self, ctx):\n"
        "        ctx['done'] = True\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "run", "mypipe:Blur", "--checkpoint-uri", "none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_an_interrupted_run_without_a_run_id_says_how_to_resume_it(runtime: Runtime, tmp_path: Path) -> None:
    """A run started without --run-id gets a random id; the command that resumes it is printed."""
    import shlex
    import signal

    from respawn_local.testkit import wait_for

    args = ["run", CHAIN, "--params", '{"work_s": 0.5, "mb": 1}', "--checkpoint-uri", f"file://{tmp_path}/ck"]
    proc = runtime.start(args)
    wait_for(lambda: '"event": "step_start"' in proc.output_log.read_text(), 60, "a step to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    text = proc.output_log.read_text()
    hint = next(line for line in text.splitlines() if "to resume run" in line)
    command = shlex.split(hint.split(": ", 2)[2])
    assert command[:2] == ["pipeline-runtime", "run"] and "--run-id" in command
    code, out, _ = runtime.run(command[1:])
    assert code == 0 and '"resumed_from": {' in out, out


def test_params_lists_a_pipelines_params_and_refuses_an_unknown_one(runtime: Runtime) -> None:
    import subprocess

    from tests.conftest import VENV_BIN

    done = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "params", "dataprep"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "required" in rows["video_uri"] and "default 224" in rows["crop_size"]
    assert "Literal['center', 'grid', 'faces']" in rows["mode"]
    bad = subprocess.run(
        [str(VENV_BIN / "pipeline-runtime"), "params", "nope"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 64 and "Traceback" not in bad.stderr and "unknown pipeline 'nope'" in bad.stderr


def test_inspect_into_a_closed_pipe_ends_without_a_traceback(runtime: Runtime, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import VENV_BIN

    uri = f"file://{tmp_path}/ck"
    code, text, _ = runtime.run(
        [
            "run",
            CHAIN,
            "--params",
            '{"work_s": 0, "mb": 1}',
            "--run-id",
            "r",
            "--checkpoint-uri",
            uri,
            "--retain",
            "Always",
        ]
    )
    assert code == 0, text
    inspect = f"{VENV_BIN / 'pipeline-runtime'} inspect {uri} --run-id r --json"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{inspect} | head -c 10 >/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_running_a_finished_run_again_says_it_is_finished(runtime: Runtime, tmp_path: Path) -> None:
    args = [
        "run",
        CHAIN,
        "--params",
        '{"work_s": 0, "mb": 1}',
        "--run-id",
        "done",
        "--checkpoint-uri",
        f"file://{tmp_path}/ck",
    ]
    assert runtime.run(args)[0] == 0
    code, text, term = runtime.run(args)
    assert code == 0 and "run done already finished: all 5 steps were done, nothing ran" in text, text
    assert term is not None and term["reason"] == "Succeeded" and "already finished" in term["message"]

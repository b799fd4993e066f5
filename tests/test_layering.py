"""The layering written in pyproject.toml ([tool.importlinter]) holds; the runtime, the operator and
the tests type-check; the whole repository passes ruff's lint and format check ([tool.ruff])."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"{len(contracts)} kept, 0 broken" in done.stdout  # every contract was read and checked


@pytest.mark.slow  # cold (a fresh checkout, no .mypy_cache) it takes 10 s or more
def test_runtime_and_examples_type_check_strict() -> None:
    done = subprocess.run(
        [
            str(VENV_BIN / "mypy"),
            "pipeline_runtime",
            "examples/custom_pipeline.py",
            "operator/respawn_operator",
            "operator/respawn_local",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


@pytest.mark.slow  # cold (a fresh checkout, no .mypy_cache) it takes 10 s or more
def test_tests_type_check_strict() -> None:
    """The tests too, against the real types of what they drive (mypy_path in [tool.mypy])."""
    done = subprocess.run([str(VENV_BIN / "mypy"), "tests"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_lint_and_format_are_clean() -> None:
    lint = subprocess.run([str(VENV_BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    form = subprocess.run(
        [str(VENV_BIN / "ruff"), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert form.returncode == 0, f"run `.venv/bin/ruff format .`:\n{form.stdout}{form.stderr}"

"""The Dockerfile, checked without a Docker engine: stages, COPY sources, entry points."""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path

import pytest

from tests.ship.dockerfile import Stage, global_arg_defaults, parse, parse_file

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_file(DOCKERFILE)


def _resolve(value: str) -> str:
    for key, default in global_arg_defaults(DOCKERFILE.read_text()).items():
        value = value.replace("${" + key + "}", default).replace("$" + key, default)
    return value


def test_multi_stage_builder_then_slim_python_311_runtime(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "runtime"]
    for stage in stages:
        assert _resolve(stage.base) == "python:3.11-slim"
    builder, runtime = stages
    assert any("pip wheel" in i.raw for i in builder.all("RUN"))
    # The runtime installs only from the builder's wheels: no index, no compiler.
    install = next(i for i in runtime.all("RUN") if "pip install" in i.raw)
    assert "--no-index" in install.raw and "from=builder" in " ".join(install.flags.get("mount", []))


def test_every_copy_source_exists_in_the_build_context(stages: list[Stage]) -> None:
    copies = [i for s in stages for i in s.all("COPY") + s.all("ADD")]
    assert copies
    for inst in copies:
        if "from" in inst.flags:
            assert inst.flags["from"][0] in {s.name for s in stages}
            continue
        *sources, _dest = inst.args
        for src in sources:
            assert (ROOT / src).exists(), f"line {inst.line}: COPY source {src} does not exist"


def _dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    admitted = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[: n + 1]), pat) for n in range(len(parts))) or fnmatch.fnmatch(path, pat):
            admitted = negate
    return admitted


def _build_context(patterns: list[str]) -> list[str]:
    """Files of the working tree that `docker build .` would send, as relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "node_modules")]
        out += [rel_dir + f for f in filenames if _dockerignore_admits(rel_dir + f, patterns)]
    return out


def test_build_context_holds_every_package_pip_install_finds(tmp_path: Path) -> None:
    import shutil

    from setuptools import find_packages

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = _build_context(patterns)
    assert "pyproject.toml" in context
    assert not [
        f
        for f in context
        if f.startswith(("tests/", "charts/", "scripts/", "bench/")) or "__pycache__" in f or f.endswith(".pyc")
    ], "only what the image needs"
    for rel in context:  # the context, as the builder stage sees it after `COPY . /src`
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, tmp_path / rel)
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]

    def found(root: Path) -> set[str]:
        return {
            pkg for where in find["where"] for pkg in find_packages(where=str(root / where), include=find["include"])
        }

    in_context, in_repo = found(tmp_path), found(ROOT)
    assert {"pipeline_runtime", "respawn_operator"} <= in_context
    assert in_context == in_repo, f"packages missing from the image: {sorted(in_repo - in_context)}"

    # Every entry point (console scripts, pipelines, stores) the repo can load, the image can too.
    def has_module(root: Path, target: str) -> bool:
        module = target.split(":")[0].replace(".", "/")
        return any(
            (root / w / f"{module}.py").exists() or (root / w / module / "__init__.py").exists() for w in find["where"]
        )

    groups = [PYPROJECT["project"]["scripts"], *PYPROJECT["project"].get("entry-points", {}).values()]
    for group in groups:
        for target in group.values():
            assert has_module(tmp_path, target) == has_module(ROOT, target), target
    for script in ("pipeline-runtime", "respawn-operator"):
        assert has_module(tmp_path, SCRIPTS[script])
    readme = PYPROJECT["project"].get("readme")
    if readme:
        assert _dockerignore_admits(readme, patterns)


def test_entry_points_named_by_the_image_are_console_scripts(stages: list[Stage]) -> None:
    runtime = stages[-1]
    entrypoint = runtime.last("ENTRYPOINT")
    cmd = runtime.last("CMD")
    assert entrypoint is not None and entrypoint.json_form and cmd is not None and cmd.json_form
    assert entrypoint.args == ["/usr/bin/tini", "--"], "tini must be PID 1 so SIGTERM reaches the runtime"
    assert cmd.args[0] in SCRIPTS
    assert {"respawn-operator", "pipeline-runtime"} <= set(SCRIPTS)
    assert SCRIPTS["respawn-operator"] == "respawn_operator.cli:main"
    assert SCRIPTS["pipeline-runtime"] == "pipeline_runtime.cli:main"
    # tini must come from the image itself.
    assert any("tini" in i.raw and "apt-get install" in i.raw for i in runtime.all("RUN"))


def test_commands_the_operator_puts_in_pods_are_console_scripts() -> None:
    from respawn_operator.config import OperatorConfig

    cfg = OperatorConfig()
    assert cfg.runtime_command[0] in SCRIPTS and cfg.cleanup_command[0] in SCRIPTS


@pytest.mark.parametrize("script", ["pipeline-runtime", "respawn-operator"])
def test_image_console_scripts_import(script: str) -> None:
    import importlib

    module, _, attr = SCRIPTS[script].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_runtime_runs_as_uid_10001_and_writes_only_to_tmp(stages: list[Stage]) -> None:
    runtime = stages[-1]
    user = runtime.last("USER")
    assert user is not None and user.args[0].split(":")[0] == "10001"
    env = " ".join(i.raw for i in runtime.all("ENV"))
    for expected in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert expected in env
    assert "--uid 10001" in " ".join(i.raw for i in runtime.all("RUN"))
    workdir = runtime.last("WORKDIR")
    assert workdir is not None and workdir.args == ["/tmp"]
    # USER comes after every RUN: nothing runs as root at run time, nothing is installed as 10001.
    order = [i.cmd for i in runtime.instructions]
    assert max(n for n, c in enumerate(order) if c == "RUN") < order.index("USER")


def test_exposed_ports_match_the_chart_defaults(stages: list[Stage]) -> None:
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "respawn" / "values.yaml").read_text())
    exposed = {int(p.split("/")[0]) for i in stages[-1].all("EXPOSE") for p in i.args}
    assert exposed == {values["metrics"]["port"], values["operator"]["health"]["port"]}


def test_parser_rejects_what_docker_rejects() -> None:
    with pytest.raises(ValueError):
        parse("RUN echo hi\n")
    with pytest.raises(ValueError):
        parse('FROM x\nCMD ["a", \n')
    with pytest.raises(ValueError):
        parse("FROM x\nRUN a \\\n")
    (stage,) = parse("# syntax=docker/dockerfile:1\nFROM x AS b\nCOPY --from=a --chown=1:1 s d\n")
    copy = stage.all("COPY")[0]
    assert copy.flags == {"from": ["a"], "chown": ["1:1"]} and copy.args == ["s", "d"]

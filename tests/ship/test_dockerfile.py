"""The Dockerfile, checked without a Docker engine: stages, COPY sources, entry points,
and its two images (`pipeline`, `operator`) with what each installs and how it runs."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from pathlib import Path

import pytest

from tests.ship.dockerfile import Stage, global_arg_defaults, parse, parse_file

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
TARGETS = {"pipeline": "pipeline-runtime", "operator": "respawn-operator"}
"""The images (`docker build --target NAME`) and the console script each one is for."""


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_file(DOCKERFILE)


def _resolve(value: str) -> str:
    for key, default in global_arg_defaults(DOCKERFILE.read_text()).items():
        value = value.replace("${" + key + "}", default).replace("$" + key, default)
    return value


def _stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def _chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and those it is built FROM, base first: what the image's instructions are."""
    out = [_stage(stages, name)]
    while out[0].base in {s.name for s in stages}:
        out.insert(0, _stage(stages, out[0].base))
    return out


def _install(stage: Stage) -> str:
    return " ".join(i.raw for i in stage.all("RUN") if "pip install" in i.raw)


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9._-]+", r)[0].lower() for r in requirements}  # type: ignore[index]


def test_one_builder_then_two_images_on_slim_python_311(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "base", "pipeline", "operator"]
    assert stages[-1].name == "operator", "`docker build .` (no --target) builds the operator, as before"
    for name in ("builder", "base"):
        assert _resolve(_stage(stages, name).base) == "python:3.11-slim"
    builder = _stage(stages, "builder")
    wheel = next(i.raw for i in builder.all("RUN") if "pip wheel" in i.raw)
    assert "--wheel-dir /wheels" in wheel
    # Wheels for every extra either image installs.
    built = set(re.search(r"/src\[([\w,]+)\]", wheel)[1].split(","))  # type: ignore[index]
    assert {"gcs", "dataprep", "operator"} <= built
    for target in TARGETS:
        chain = _chain(stages, target)
        assert [s.name for s in chain] == ["base", target]
        install = [i for i in chain[-1].all("RUN") if "pip install" in i.raw]
        assert install, target
        for inst in install:  # only the builder's wheels: no index, no compiler, no wheel layer
            assert "--no-index" in inst.raw and "from=builder" in " ".join(inst.flags.get("mount", [])), target
        assert not any("pip install" in i.raw for i in chain[0].all("RUN")), "the shared base installs no Python"


def test_the_pipeline_image_holds_the_runtime_gcs_and_dataprep_and_no_operator(stages: list[Stage]) -> None:
    install = _install(_stage(stages, "pipeline"))
    extras = set(re.search(r"respawn\[([\w,]+)\]", install)[1].split(","))  # type: ignore[index]
    assert extras == {"gcs", "dataprep"}
    assert "pip check" in install
    optional = PYPROJECT["project"]["optional-dependencies"]
    installed = _names(PYPROJECT["project"]["dependencies"]) | _names([r for e in extras for r in optional[e]])
    assert {"numpy", "pydantic", "google-cloud-storage", "opencv-python-headless"} <= installed
    assert installed.isdisjoint({"kopf", "aiohttp", "kubernetes", "prometheus-client", "cryptography"})


def test_the_operator_image_holds_the_operator_extra_only(
    stages: list[Stage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """respawn --no-deps, on the [operator] requirements the builder writes from pyproject."""
    import shlex

    # Run the builder's snippet (in /src, which holds pyproject.toml) and read what it writes.
    words = shlex.split(" ".join(i.raw for i in _stage(stages, "builder").all("RUN")))
    snippet = next(words[n + 1] for n, w in enumerate(words[:-1]) if w == "-c" and words[n - 1] == "python")
    assert "/wheels/operator.txt" in snippet
    monkeypatch.chdir(ROOT)
    exec(snippet.replace("/wheels/operator.txt", str(tmp_path / "operator.txt")), {})
    written = (tmp_path / "operator.txt").read_text().splitlines()
    assert written == PYPROJECT["project"]["optional-dependencies"]["operator"]
    install = _install(_stage(stages, "operator"))
    assert "-r /wheels/operator.txt" in install and "--no-deps respawn" in install
    assert install.index("pip check") < install.index("--no-deps respawn"), "pip check before respawn's own deps go"
    assert "import respawn_operator.cli" in install, "the operator's modules imported once at build time"
    operator = _names(PYPROJECT["project"]["optional-dependencies"]["operator"])
    assert {"kopf", "kubernetes", "aiohttp", "prometheus-client", "pyyaml", "pydantic"} <= operator
    assert operator.isdisjoint({"numpy", "opencv-python-headless", "google-cloud-storage", "xxhash"})


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
        if f.startswith(("tests/", "tools/", "charts/", "scripts/", "bench/"))
        or "__pycache__" in f
        or f.endswith(".pyc")
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


@pytest.mark.parametrize("target", TARGETS)
def test_entry_points_named_by_each_image_are_console_scripts(stages: list[Stage], target: str) -> None:
    image = _stage(stages, target)
    entrypoint = next(e for s in reversed(_chain(stages, target)) if (e := s.last("ENTRYPOINT")))
    cmd = image.last("CMD")
    assert entrypoint is not None and entrypoint.json_form and cmd is not None and cmd.json_form
    assert entrypoint.args == ["/usr/bin/tini", "--"], "tini must be PID 1 so SIGTERM reaches the runtime"
    assert cmd.args[0] == TARGETS[target] and cmd.args[0] in SCRIPTS
    assert SCRIPTS["respawn-operator"] == "respawn_operator.cli:main"
    assert SCRIPTS["pipeline-runtime"] == "pipeline_runtime.cli:main"
    # tini must come from the image itself.
    assert any("tini" in i.raw and "apt-get install" in i.raw for s in _chain(stages, target) for i in s.all("RUN"))


def test_commands_the_operator_puts_in_pods_are_console_scripts() -> None:
    from respawn_operator.config import OperatorConfig

    cfg = OperatorConfig()
    assert cfg.runtime_command[0] in SCRIPTS and cfg.cleanup_command[0] in SCRIPTS


@pytest.mark.parametrize("script", ["pipeline-runtime", "respawn-operator"])
def test_image_console_scripts_import(script: str) -> None:
    import importlib

    module, _, attr = SCRIPTS[script].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_runs_as_uid_10001_and_writes_only_to_tmp(stages: list[Stage], target: str) -> None:
    base, image = _chain(stages, target)
    user = image.last("USER")
    assert user is not None and user.args[0].split(":")[0] == "10001"
    assert base.last("USER") is None, "the shared base stays root: each image installs, then drops to 10001"
    env = " ".join(i.raw for i in base.all("ENV") + image.all("ENV"))
    for expected in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert expected in env
    assert "--uid 10001" in " ".join(i.raw for i in base.all("RUN"))
    workdir = image.last("WORKDIR") or base.last("WORKDIR")
    assert workdir is not None and workdir.args == ["/tmp"]
    # USER comes after every RUN: nothing runs as root at run time, nothing is installed as 10001.
    order = [i.cmd for i in image.instructions]
    assert max(n for n, c in enumerate(order) if c == "RUN") < order.index("USER")


def test_exposed_ports_match_the_chart_defaults(stages: list[Stage]) -> None:
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "respawn" / "values.yaml").read_text())
    exposed = {int(p.split("/")[0]) for i in _stage(stages, "operator").all("EXPOSE") for p in i.args}
    assert exposed == {values["metrics"]["port"], values["operator"]["health"]["port"]}
    assert not _stage(stages, "pipeline").all("EXPOSE"), "pipeline pods serve nothing"


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

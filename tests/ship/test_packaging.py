"""pyproject.toml's extras cover what the code imports, read statically (no install).

Every module belongs to a group, and each group is installed by some extras: the runtime's
core by `dependencies`, `pipeline_runtime.storage.gcs` by [gcs], `pipeline_runtime.pipelines`
by [dataprep], `respawn_operator` by [operator] alone (the operator image installs respawn
without the core's numpy), `respawn_local` by [local]. Each module's third-party imports,
and those of every module of ours it imports (lazily too: a lazy import is still a need),
must be installed by its group's extras. `import kopf` in the runtime core or `import cv2`
in the operator fails here.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pipeline_runtime import extras

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = ("pipeline_runtime", "respawn_operator", "respawn_local")
SOURCES = {"pipeline_runtime": ROOT / "pipeline_runtime", **{p: ROOT / "operator" / p for p in OURS[1:]}}

OPTIONAL_IMPORTS = {
    ("pipeline_runtime.testing", "pytest"): "the `resumable` fixture; only pytest loads the plugin (pytest11)",
}
"""Imports with a fallback when the package is missing: not a need of their module."""

GROUP_EXTRAS = {
    "core": (True, ()),
    "gcs": (True, ("gcs",)),
    "dataprep": (True, ("dataprep",)),
    "operator": (False, ("operator",)),  # no core: the operator image installs respawn --no-deps
    "local": (True, ("local",)),
}
"""Group -> (installs the core `dependencies`?, extras)."""


def group_of(module: str) -> str:
    if module == "pipeline_runtime.storage.gcs":
        return "gcs"
    if module == "pipeline_runtime.pipelines" or module.startswith("pipeline_runtime.pipelines."):
        return "dataprep"
    return {"pipeline_runtime": "core", "respawn_operator": "operator", "respawn_local": "local"}[
        module.partition(".")[0]
    ]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match[0].lower().replace("_", "-")


def _self_extras(requirement: str) -> list[str]:
    """`respawn[a,b]` -> [a, b]; [] for any other requirement."""
    match = re.fullmatch(r"respawn\[([\w,\s-]+)\]", requirement.strip())
    return [e.strip() for e in match[1].split(",")] if match else []


def requirements_of(extra: str, project: dict[str, Any] = PROJECT) -> list[str]:
    """The requirements an extra installs, its `respawn[...]` references expanded (the core not included)."""
    out: list[str] = []
    for req in project["optional-dependencies"][extra]:
        inner = _self_extras(req)
        out += [r for e in inner for r in requirements_of(e, project)] if inner else [req]
    return out


def dists_installed_by(group: str, project: dict[str, Any] = PROJECT) -> set[str]:
    core, names = GROUP_EXTRAS[group]
    reqs = list(project["dependencies"]) if core else []
    for extra in names:
        reqs += requirements_of(extra, project)
    return {_name(r) for r in reqs}


def module_files() -> dict[str, Path]:
    """Every module of ours by dotted name (packages by their __init__)."""
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(module: str, tree: ast.Module, known: Iterable[str]) -> tuple[set[str], set[str]]:
    """(modules of ours, third-party top-level names) that `module` imports at run time, anywhere in it."""
    known = set(known)
    is_package = module in known and any(k.startswith(module + ".") for k in known)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    ours: set[str] = set()
    third: set[str] = set()

    def add(name: str) -> None:
        top = name.partition(".")[0]
        if top in OURS:
            parts = name.split(".")
            ours.update(".".join(parts[: n + 1]) for n in range(len(parts)) if ".".join(parts[: n + 1]) in known)
        elif top not in sys.stdlib_module_names and top != "__future__":
            third.add(top)

    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target)
            for alias in node.names:  # `from . import engine`: a submodule
                if f"{target}.{alias.name}" in known:
                    add(f"{target}.{alias.name}")
    return ours, third


def needs(sources: dict[str, str]) -> dict[str, dict[str, str]]:
    """Module -> {third-party import name: the module of ours that imports it}, through our imports."""
    direct = {}
    for module, text in sources.items():
        ours, third = imports_of(module, ast.parse(text), sources)
        third = {t for t in third if (module, t) not in OPTIONAL_IMPORTS}
        direct[module] = (ours - {module}, third)
    out: dict[str, dict[str, str]] = {}
    for module in sources:
        found: dict[str, str] = {}
        seen, todo = {module}, [module]
        while todo:
            current = todo.pop()
            ours, third = direct[current]
            for name in third:
                found.setdefault(name, current)
            for dep in ours - seen:
                seen.add(dep)
                todo.append(dep)
        out[module] = found
    return out


def violations(sources: dict[str, str], project: dict[str, Any] = PROJECT) -> list[str]:
    problems = []
    for module, found in sorted(needs(sources).items()):
        group = group_of(module)
        installed = dists_installed_by(group, project)
        for name, via in sorted(found.items()):
            dist = extras.distribution(name)
            if dist not in installed:
                where = "" if via == module else f" (through {via})"
                problems.append(
                    f"{module} imports {name}{where}, but its group {group!r} installs only {sorted(installed)}"
                )
    return problems


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {module: path.read_text() for module, path in module_files().items()}


def test_every_import_is_installed_by_the_extras_of_its_group(sources: dict[str, str]) -> None:
    assert {"pipeline_runtime.cli", "respawn_operator.cli", "respawn_local.demo"} <= set(sources)
    assert violations(sources) == []


def test_the_check_catches_a_misplaced_import(sources: dict[str, str]) -> None:
    bad = {
        **sources,
        "pipeline_runtime.fake_core": "import kopf\n",
        "respawn_operator.fake": "def f():\n    import cv2\n",
        "pipeline_runtime.fake_lazy": "def f():\n    from .pipelines import dataprep\n",  # cv2, through dataprep
        "respawn_operator.fake_numpy": "from pipeline_runtime import codec\n",  # numpy: not in [operator]
    }
    found = "\n".join(violations(bad))
    assert "pipeline_runtime.fake_core imports kopf" in found
    assert "respawn_operator.fake imports cv2" in found
    assert "pipeline_runtime.fake_lazy imports cv2 (through pipeline_runtime.pipelines." in found
    assert "respawn_operator.fake_numpy imports numpy (through pipeline_runtime.codec)" in found
    # TYPE_CHECKING imports and relative imports are read as Python does.
    ours, third = imports_of(
        "pipeline_runtime.x",
        ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import kopf\nfrom .errors import E\n"),
        sources,
    )
    assert third == set() and ours == {"pipeline_runtime", "pipeline_runtime.errors"}


def test_the_runtime_core_installs_no_optional_package(sources: dict[str, str]) -> None:
    """`pip install respawn` alone: the runtime, nothing of GCS, opencv, the operator or the emulator."""
    core = {_name(r) for r in PROJECT["dependencies"]}
    assert core == {"numpy", "pydantic", "xxhash", "rich"}
    cli = needs(sources)["pipeline_runtime.cli"]
    assert set(cli) <= {"numpy", "pydantic", "xxhash", "rich"}


def test_every_optional_import_names_its_extra_in_messages(sources: dict[str, str]) -> None:
    """pipeline_runtime.extras (what a missing package's message names) agrees with pyproject."""
    optional_extras = set(PROJECT["optional-dependencies"]) - {"test", "all"}
    for name, extra in extras.EXTRA_OF.items():
        assert extra in optional_extras, name
        dist = extras.distribution(name)
        assert dist in {_name(r) for r in requirements_of(extra)}, f"{name}: {dist} is not in [{extra}]"
    core = {_name(r) for r in PROJECT["dependencies"]}
    assert {extras.distribution(n) for n in extras.CORE} == core
    imported = {name for found in needs(sources).values() for name in found}
    assert imported - set(extras.EXTRA_OF) - extras.CORE == set(), "add the new import to pipeline_runtime/extras.py"


def test_all_holds_every_extra_and_the_operator_repeats_the_core_pins() -> None:
    optional = PROJECT["optional-dependencies"]
    assert set(_self_extras(optional["all"][0])) == set(optional) - {"all", "test"}
    core = {_name(r): r for r in PROJECT["dependencies"]}
    for req in optional["operator"]:
        if _name(req) in core:  # the same pin as the core's, or the operator image would drift
            assert req.split("#")[0].strip() == core[_name(req)], req
    kopf = next(r for r in optional["operator"] if _name(r) == "kopf")
    assert re.search(r"<\s*2\b", kopf), "kopf is capped below its next major"


def test_missing_package_messages() -> None:
    cv2 = ModuleNotFoundError("No module named 'cv2'", name="cv2")
    assert extras.missing_package_message(cv2, "pipeline 'dataprep'") == (
        "pipeline 'dataprep' needs opencv-python-headless, which is not installed: pip install 'respawn[dataprep]'"
    )
    yaml = ModuleNotFoundError(name="yaml")
    assert "needs pyyaml, which is not installed: pip install 'respawn[local]'" in (
        extras.missing_package_message(yaml, "respawn-demo", "local") or ""
    )
    google = ModuleNotFoundError(name="google.cloud")
    assert "respawn[gcs]" in (extras.missing_package_message(google, "gs://") or "")
    assert "pip install respawn" in (extras.missing_package_message(ModuleNotFoundError(name="numpy"), "x") or "")
    assert extras.missing_package_message(ModuleNotFoundError(name="mypackage"), "x") is None


def test_each_package_ships_its_py_typed_marker() -> None:
    """PEP 561: the marker in the source tree and in package-data, or the wheel leaves it out."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, folder in SOURCES.items():
        assert (folder / "py.typed").is_file(), package
        assert "py.typed" in package_data.get(package, []), package

"""Find a pipeline class by `module:Class` or by its registered name."""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from .errors import InvalidInput
from .extras import missing_package_message
from .pipeline import Pipeline

GROUP = "respawn.pipelines"


def registered() -> dict[str, str]:
    """Registered pipeline names and their `module:Class` targets."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def resolve(spec: str) -> type[Pipeline]:
    """`module:Class` or a name from the `respawn.pipelines` entry-point group."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        # Like `python -m`: a module next to where the command runs is found without PYTHONPATH=.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = missing_package_message(e, f"pipeline {spec!r}") if isinstance(e, ModuleNotFoundError) else None
            raise InvalidInput(hint or f"pipeline: cannot import module {module_name!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed while loading (SyntaxError, ...)
            raise InvalidInput(f"pipeline: module {module_name!r} failed to load: {type(e).__name__}: {e}") from None
        cls = getattr(module, attr, None)
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == spec]
        if not found:
            known = ", ".join(sorted(registered())) or "none"
            raise InvalidInput(
                f"pipeline: unknown pipeline {spec!r}; registered pipelines: {known} (or give module:Class)"
            )
        try:
            cls = found[0].load()
        except ModuleNotFoundError as e:  # a registered pipeline of an extra that is not installed
            hint = missing_package_message(e, f"pipeline {spec!r}")
            if hint is None:
                raise
            raise InvalidInput(hint) from None
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise InvalidInput(f"pipeline: {spec!r} is not a pipeline_runtime.Pipeline subclass")
    return cls

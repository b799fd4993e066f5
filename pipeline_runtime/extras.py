"""Which extra of the `respawn` distribution installs an optional package, for error messages.

`pip install respawn` holds the runtime's core (a pipeline with `file://` checkpoints);
the rest comes as extras (pyproject.toml, `[project.optional-dependencies]`). A command,
store or pipeline that needs a package of an extra that is not installed says so in one
line, naming the extra, instead of a traceback. Standard library only: the operator and
the local harness use it too, before any of their own dependencies can be imported.
tests/ship/test_packaging.py checks this table against pyproject.toml.
"""

from __future__ import annotations

from typing import NoReturn

EXTRA_OF = {
    # [gcs]: gs:// checkpoints (google-cloud-storage and the requests it brings)
    "google": "gcs",
    "requests": "gcs",
    # [dataprep]: the sample video pipeline (pipeline_runtime.pipelines)
    "cv2": "dataprep",
    # [operator]: respawn-operator and kubectl-respawn (urllib3 comes with kubernetes)
    "kopf": "operator",
    "kubernetes": "operator",
    "urllib3": "operator",
    "aiohttp": "operator",
    "prometheus_client": "operator",
    "yaml": "operator",
    # [local]: the API emulator, pod simulator and respawn-demo
    "cryptography": "local",
}
"""Top-level import name -> the extra whose packages provide it."""

DISTRIBUTION_OF = {
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "google": "google-cloud-storage",
    "prometheus_client": "prometheus-client",
    # Imported directly, installed as a dependency of the package next to them:
    "requests": "google-cloud-storage",  # the exception types its HTTP transport raises (storage/gcs.py)
    "urllib3": "kubernetes",  # the exception types the kubernetes client raises (kubectl_plugin.py)
}
"""Import name -> the distribution in pyproject.toml that installs it, where the names differ."""

CORE = frozenset({"numpy", "pydantic", "xxhash", "rich"})
"""Import names of the core dependencies (`pip install respawn` alone installs them)."""


def missing_package_message(error: ModuleNotFoundError, what: str, extra: str | None = None) -> str | None:
    """One line for `what` (a command, a store, a pipeline) failing on a package that an extra
    or the core installs; None when the missing module is none of them (a bug or the user's own
    import: the caller keeps its usual error). `extra`: the one `what` needs as a whole (the
    demo needs all of [local], not only the extra of the first package found missing)."""
    top = (error.name or "").partition(".")[0]
    if top in EXTRA_OF:
        extra = extra or EXTRA_OF[top]
        return f"{what} needs {distribution(top)}, which is not installed: pip install 'respawn[{extra}]'"
    if top in CORE:
        return (
            f"{what} needs {distribution(top)}, a core dependency of respawn that is not installed here (the operator "
            "image leaves the runtime's out: run pipelines in the pipeline image): pip install respawn"
        )
    return None


def exit_if_missing(error: ModuleNotFoundError, what: str, extra: str | None = None) -> NoReturn:
    """For console scripts (`what`: their name): end with the one line when an extra's package
    is missing, re-raise anything else."""
    message = missing_package_message(error, what, extra)
    if message is None:
        raise error
    raise SystemExit(message)


def distribution(import_name: str) -> str:
    """The distribution that installs a top-level import name (`cv2` -> opencv-python-headless)."""
    return DISTRIBUTION_OF.get(import_name, import_name.lower().replace("_", "-"))

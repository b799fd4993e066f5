"""Dev tools, run from the repo root as `python -m tools.NAME`; not part of the package
(pyproject's packages.find does not include them, .dockerignore keeps them out of images)."""

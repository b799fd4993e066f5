#!/usr/bin/env bash
# Create .venv (if needed) and install Respawn into it with every extra ([all]: GCS,
# dataprep, the operator, the local emulator and demo), and the test tools when asked.
# The install is editable, so code changes need no reinstall; it is redone only when
# pyproject.toml (dependencies, entry points) or the extras asked for changed since the
# last successful one (a stamp in .venv), or with RESPAWN_REINSTALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras="[all]"
if [ "${1:-}" = "--test" ]; then
  extras="[all,test]"
fi
stamp=.venv/.respawn-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
if [ "${RESPAWN_REINSTALL:-0}" != "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && .venv/bin/python -c "import cv2, kopf, pipeline_runtime, respawn_operator" 2>/dev/null; then
  exit 0  # installed from this pyproject already
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras}"
echo "$want" > "$stamp"

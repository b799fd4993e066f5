#!/usr/bin/env bash
# The first command: install, then run the whole system locally (no cluster, no cloud).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/respawn-demo "$@"

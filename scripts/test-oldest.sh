#!/usr/bin/env bash
# The oldest `kubernetes` and `kopf` that pyproject.toml's pins ([operator]) allow, on the tests that
# touch them (credentials, the chart install, kopf against the emulator, the operator
# end to end). CI runs the newest (scripts/test.sh); run this before changing a pin or
# the code that talks to either library. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-oldest
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pins=$("$PYTHON" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["operator"]
for dep in deps:
    m = re.fullmatch(r"(kopf|kubernetes)>=([\w.]+)(,<[\w.]+)?", dep.split(";")[0].strip())
    if m:
        print(f"{m[1]}=={m[2]}")  # PEP 440: ==29 is 29.0.0
PY
)
echo "oldest pins: $pins"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # one word per pin
"$VENV/bin/python" -m pip install --quiet -e '.[all,test]' $pins
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
  tests/operator/test_op_credentials.py tests/ship/test_chart_install.py \
  tests/emulator/test_kopf_compat.py tests/operator/test_op_e2e.py "$@"

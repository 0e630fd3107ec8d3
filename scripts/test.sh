#!/usr/bin/env bash
# Set up and run the fast test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export KSUITE_OFFLINE=1
exec .venv/bin/python -m pytest -m "not slow" -q --durations=15 "$@"

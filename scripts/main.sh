#!/usr/bin/env bash
# The main job: set up, train the MNIST MLP at a small budget, export it, reload the export and
# print predictions for real test digits (and serve + query it, when serving/ is present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/ksuite demo "$@"

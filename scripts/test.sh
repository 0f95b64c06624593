#!/usr/bin/env bash
# Install everything and run the test suite (this is what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ELBOLAB_VENV:-.venv}/bin/python" -m pytest "$@"

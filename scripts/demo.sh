#!/usr/bin/env bash
# The main job end to end: install, fetch MNIST (sha256-checked), train a VAE
# and an IWAE (k=5) for a short CPU budget, evaluate both, print their bounds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ELBOLAB_VENV:-.venv}/bin/elbolab" quickstart "$@"

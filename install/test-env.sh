#!/usr/bin/env bash
# Creates (or refreshes) the pinned Python virtual environment the tests use: .venv/
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python was not found; install Python 3.10 or newer (or set PYTHON)" >&2
  exit 1
fi
# Headless Chromium renders the exported quickstart notebook in a test
# (Debian's package; installed when this runs as root with apt).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (headless rendering test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium is missing and cannot be installed here (needs root and apt-get);" \
      "the rendering test will fail until it is installed" >&2
  fi
fi
bash install/mold.sh
stamp=.venv/.requirements
if [ -f "$stamp" ] && cmp -s "$stamp" tests/requirements.txt; then
  exit 0
fi
echo "==> creating the test environment in .venv (pinned: tests/requirements.txt)"
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
cp tests/requirements.txt "$stamp"

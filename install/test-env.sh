#!/usr/bin/env bash
# Creates (or refreshes) the pinned Python virtual environment the tests use: .venv/
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python was not found; install Python 3.10 or newer (or set PYTHON)" >&2
  exit 1
fi
stamp=.venv/.requirements
if [ -f "$stamp" ] && cmp -s "$stamp" tests/requirements.txt; then
  exit 0
fi
echo "==> creating the test environment in .venv (pinned: tests/requirements.txt)"
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
cp tests/requirements.txt "$stamp"

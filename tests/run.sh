#!/usr/bin/env bash
# The test command of README.md: formatting, lints, every test of the
# workspace (unit, integration, doc tests, `taper` run as a process) and
# the vendored evcxr's unit tests, then the Python tests that read taper's
# files with real Python tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    echo "error: cargo $1 is missing; install it with: rustup component add $2" >&2
    exit 1
  fi
}
need fmt rustfmt
need clippy clippy
bash install/test-env.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test --workspace"
cargo test --locked --workspace
# vendor/ is outside the workspace (patched copies of dependencies), but
# taper's patches to evcxr (build cache, rustc replay, type probe, variable
# scan) have unit tests of their own.
echo "==> cargo test -p evcxr --lib (the vendored, patched evcxr)"
cargo test --locked -p evcxr --lib
echo "==> pytest tests/python (against target/debug/taper)"
TAPER_BIN=target/debug/taper .venv/bin/python -m pytest -q --timeout 1800 tests/python

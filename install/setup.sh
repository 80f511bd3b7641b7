#!/usr/bin/env bash
# Builds taper from source on a fresh machine: checks the Rust toolchain,
# builds the `taper` binary in release mode (target/release/taper) and
# installs its Jupyter kernelspec for the current user.
# The test environment is install/test-env.sh; the CUDA build environment
# install/cuda-build-env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo was not found. Install Rust (https://rustup.rs), open a new shell, and run this script again." >&2
  exit 1
fi

bash install/mold.sh
echo "==> building taper (release; the first build compiles candle and takes a few minutes)"
cargo build --release --locked -p taper-kernel
echo "==> built $(pwd)/target/release/taper"
echo "==> installing the Jupyter kernelspec (Rust (taper))"
target/release/taper install --user
echo "    try: target/release/taper train            (the default recipe)"
echo "         target/release/taper train --help     (recipes, data sets, every argument)"

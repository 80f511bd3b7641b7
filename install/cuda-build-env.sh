#!/usr/bin/env bash
# Prepares a CUDA 13.0 build environment for `--features cuda` on a machine
# with no CUDA toolkit (and no GPU), from package registries only: nvcc and
# the CUDA libraries from PyPI wheels, and the driver library libcuda (only
# needed to link) from Debian's non-free section. Everything goes into
# ~/.cache/taper-cuda (or $TAPER_CUDA_HOME); the second run only prints.
#
# Usage:  eval "$(bash install/cuda-build-env.sh)"
#         cargo build --release --features cuda        (or cargo bench ... --features cuda)
#
# It prints export lines: PATH (nvcc), CUDA_ROOT / CUDA_PATH (headers and
# libraries for candle's kernel build), CUDA_COMPUTE_CAP (default 90: Hopper,
# H100/H200; set it before running for another GPU) and RUSTFLAGS (-L for the
# link-time libraries: libcuda, cublas, cublasLt, curand, nvrtc, cudart, nccl).
# With a CUDA toolkit installed, none of this is needed.
#
# The binary it yields loads, at run time, the GPU machine's own driver and
# CUDA 13 libraries, e.g.:
#   export LD_LIBRARY_PATH=/usr/lib:/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib
# The Debian part needs root (apt) on a Debian bookworm system; elsewhere,
# put a libcuda.so.1 into $TAPER_CUDA_HOME/libcuda/ by hand first.
set -euo pipefail
ROOT="${TAPER_CUDA_HOME:-$HOME/.cache/taper-cuda}"
VENV="$ROOT/venv"
LINK="$ROOT/link"
# 1. nvcc, the CUDA runtime, cuBLAS, cuRAND, NVRTC and NCCL from PyPI (NVIDIA's wheels).
if [ ! -x "$VENV/bin/nvcc-ready" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q >&2 \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand" "nvidia-nccl-cu13"
  touch "$VENV/bin/nvcc-ready"; chmod +x "$VENV/bin/nvcc-ready"
fi
SP=$("$VENV/bin/python" -c 'import site;print(site.getsitepackages()[0])')
C="$SP/nvidia/cu13"
# 2. libcuda (the driver API) is only needed to link; Debian ships it in non-free.
if [ ! -e "$ROOT/libcuda/libcuda.so.1" ]; then
  if ! apt-cache policy libcuda1 2>/dev/null | grep -q Candidate:.*[0-9]; then
    cat > /etc/apt/sources.list.d/taper-nonfree.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >&2
  fi
  tmp=$(mktemp -d); (cd "$tmp" && apt-get download -qq libcuda1 >&2 && dpkg -x libcuda1_*.deb x)
  mkdir -p "$ROOT/libcuda"; cp -a "$tmp"/x/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so* "$ROOT/libcuda/"; rm -rf "$tmp"
fi
# 3. One folder of unversioned names (libcublas.so, ...) for the linker's -l flags.
mkdir -p "$LINK"
ln -sf "$ROOT/libcuda/libcuda.so.1" "$LINK/libcuda.so"
for pair in cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13 cudart:libcudart.so.13; do
  ln -sf "$C/lib/${pair#*:}" "$LINK/lib${pair%%:*}.so"
done
ln -sf "$SP/nvidia/nccl/lib/libnccl.so.2" "$LINK/libnccl.so"
# 4. The exports, on stdout for eval; progress went to stderr.
echo "export PATH=\"$C/bin:\$PATH\" CUDA_ROOT=\"$C\" CUDA_PATH=\"$C\" CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-90}\""
echo "export RUSTFLAGS=\"\${RUSTFLAGS:-} -L native=$LINK\""
echo "cuda build env ready: $("$C/bin/nvcc" --version | tail -1); link dir $LINK" >&2

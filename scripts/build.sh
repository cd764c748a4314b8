#!/usr/bin/env bash
# Configures and builds Strata into ${BUILD_DIR:-build}. Extra arguments go to cmake's configure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
# The CUDA toolkit is found where Debian/NVIDIA install it even when nvcc is not on PATH.
if [[ -z "${CUDAToolkit_ROOT:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDAToolkit_ROOT=/usr/local/cuda
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$(nproc)"

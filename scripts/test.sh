#!/usr/bin/env bash
# The test command: on a fresh Debian machine it installs what is missing, builds everything
# (CUDA sources included where the toolkit is present, warnings as errors) and runs the whole
# suite with ctest: unit, multi-rank (mpirun) and, where a GPU is present, CUDA tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
BUILD_DIR=$build "$root/scripts/build.sh" -DSTRATA_WERROR=ON
"$root/scripts/fetch_data.sh"  # GPT-2 vocabulary + Brown corpus for the tokenizer/data tests
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 600

#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz) with clang, coverage instrumentation and ASan into
# build-fuzz/, and runs each for SECONDS (default 60), seeded with tests/data/bad/ and the configs.
# A crash or sanitizer report stops that harness and leaves the input as build-fuzz/crash-*; add
# what it found to tests/data/bad/ with its expected error once fixed.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]      targets: config safetensors manifest tokenizer
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(config safetensors manifest tokenizer)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSTRATA_FUZZ=ON \
  -DSTRATA_CUDA=OFF -DSTRATA_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus_$t"
  mkdir -p "$corpus"
  case $t in
    config) cp "$root"/configs/*.yaml "$root"/tests/data/bad/configs/*.yaml "$corpus"/ ;;
    safetensors) cp "$root"/tests/data/bad/safetensors/*.safetensors "$corpus"/ ;;
    manifest) for m in "$root"/tests/data/bad/manifests/*/manifest.yaml; do cp "$m" "$corpus/$(basename "$(dirname "$m")").yaml"; done ;;
    tokenizer) cp "$root"/data/brown/text/ca0*.txt "$corpus"/ 2>/dev/null || true ;;
  esac
  echo "fuzz_$t: ${seconds}s"
  (cd "$build" && ASAN_OPTIONS=detect_leaks=0 "./fuzz_$t" -max_total_time="$seconds" -max_len=65536 \
      -print_final_stats=1 "$corpus" 2>"fuzz_$t.log") || { echo "fuzz_$t: FOUND SOMETHING, see $build/fuzz_$t.log"; status=1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/fuzz_$t.log" | sed "s/^/  /" || true
done
exit $status

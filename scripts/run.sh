#!/usr/bin/env bash
# The main job: on a fresh machine, set up, build, fetch and tokenize the Brown corpus, train the
# small Llama-style config on the CPU, save checkpoints, and plot the loss curve.
#
#   scripts/run.sh [extra strata train arguments, e.g. --set train.steps=100]
#
# Re-running continues from the newest checkpoint (--resume auto) instead of starting over.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-$root/build}
config=${CONFIG:-configs/brown-small.yaml}

"$root/scripts/setup.sh"
BUILD_DIR=$build "$root/scripts/build.sh"
"$root/scripts/fetch_data.sh"
if [[ ! -f data/brown/train.h5 || ! -f data/brown/val.h5 ]]; then
  "$build/strata" tokenize --input data/brown/text --output data/brown/train.h5 \
    --val-output data/brown/val.h5 --tokenizer data/gpt2 --val-fraction 0.01
fi

# One process with every core as OpenMP threads (our kernels and OpenBLAS share the pool): on the
# 2-core machine this measured 1.06-1.11x faster than dp2 over mpirun with one thread per rank
# (docs/benchmarks.md, scripts/bench_threads_vs_ranks.sh).
threads=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
echo "run: 1 process x $OMP_NUM_THREADS OpenMP threads, measured faster here than $threads mpirun ranks (config $config)"
out_dir=$("$build/strata" config --config "$config" "$@" | sed -n 's/^  out_dir: "\(.*\)"$/\1/p')
time "$build/strata" train --config "$config" --resume auto "$@"
/usr/bin/python3 "$root/scripts/plot_metrics.py" "$out_dir"

#!/usr/bin/env bash
# Threads or ranks on this machine: configs/brown-small.yaml (the main job's model, 16 x 64 tokens
# a step) as one process with every core as OpenMP threads, against dp = cores ranks of one thread
# each, side by side; median tokens/s over steps 3-12.
# usage: scripts/bench_threads_vs_ranks.sh BUILD_DIR TRAIN.H5 VAL.H5
set -euo pipefail
build=$1 train=$2 val=$3
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--config configs/brown-small.yaml --set "data.train=$train" --set "data.val=$val"
        --set train.steps=12 --set train.log_every=1 --set train.eval_every=0 --set checkpoint.every=0)
OMP_NUM_THREADS=$cores "$build/strata" train "${common[@]}" --set "train.out_dir=$work/threads" >/dev/null 2>&1
OMP_NUM_THREADS=1 mpirun -np "$cores" --oversubscribe --allow-run-as-root "$build/strata" train "${common[@]}" \
  --set "train.out_dir=$work/ranks" --set "parallel.dp=$cores" --set "train.micro_batch=$((16 / cores))" >/dev/null 2>&1
/usr/bin/python3 - "$work" "$cores" <<'PY'
import json, statistics, sys
work, cores = sys.argv[1], sys.argv[2]
def rate(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")][2:]
    return statistics.median(r["tokens_per_s"] for r in rows)
t, r = rate("threads"), rate("ranks")
print("| how | tokens/s (median) |\n|---|---:|")
print(f"| 1 process x {cores} OpenMP threads | {t:.0f} |")
print(f"| mpirun -np {cores}, dp={cores}, 1 thread each | {r:.0f} |")
print(f"threads / ranks = {t / r:.2f}")
PY

#!/usr/bin/env bash
# How much of data parallelism's gradient all-reduce backward hides: dp2 on this machine, two
# runs of configs/tiny-llama.yaml (one OpenMP thread per rank):
#   - buckets of BUCKET_MB (default 4): each bucket's all-reduce starts when backward finishes it;
#   - one bucket of everything: it can only start after backward, so all of it is exposed.
# From the trainer's timestamps (metrics.jsonl: comm_exposed_ms, the wait after backward), the
# hidden share is 1 - exposed(buckets) / exposed(one bucket). Steps 1-2 are warm-up and dropped.
# usage: scripts/bench_dp_overlap.sh BUILD_DIR TRAIN.H5 VAL.H5 [STEPS]
set -euo pipefail
build=$1 train=$2 val=$3 steps=${4:-12}
bucket=${BUCKET_MB:-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {
  OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe --allow-run-as-root "$build/strata" train \
    --config configs/tiny-llama.yaml --set "data.train=$train" --set "data.val=$val" \
    --set "train.steps=$steps" --set train.log_every=1 --set "train.out_dir=$work/$1" \
    --set train.eval_every=0 --set parallel.dp=2 --set checkpoint.every=0 \
    --set "parallel.bucket_mb=$2" >/dev/null 2>&1
}
run buckets "$bucket"
run single 100000
/usr/bin/python3 - "$work" "$bucket" <<'PY'
import json, sys
work, bucket = sys.argv[1], sys.argv[2]
def mean(run, key):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")][2:]
    return sum(r[key] for r in rows) / len(rows), len(rows)
eb, n = mean("buckets", "comm_exposed_ms")
es, _ = mean("single", "comm_exposed_ms")
sb, _ = mean("buckets", "step_ms")
ss, _ = mean("single", "step_ms")
print(f"| layout | buckets | step ms | exposed all-reduce ms |")
print(f"|---|---|---:|---:|")
print(f"| dp2 | {bucket} MiB | {sb:.1f} | {eb:.1f} |")
print(f"| dp2 | one (after backward) | {ss:.1f} | {es:.1f} |")
print(f"hidden share: 1 - {eb:.1f} / {es:.1f} = {100 * (1 - eb / es):.1f}% over {n} steps")
PY

#!/usr/bin/env bash
# End to end through the command line: `mpirun -np 2 strata train` with tensor parallelism writes
# a checkpoint at step 4; a one-process run resumes from it to step 6. Its losses must equal, to
# the printed digits, a one-process run that was never stopped: a checkpoint of one layout
# continues under another.
# usage: layout_resume.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
strata=$1 source_dir=$2 mpiexec=$3
data=${STRATA_DATA_DIR:-$source_dir/data}
[[ -f "$data/brown/text/ca01.txt" ]] || { echo "FAIL: $data/brown/text missing: run scripts/fetch_data.sh"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$strata" tokenize --input "$data/brown/text" --output "$work/train.h5" --val-output "$work/val.h5" \
  --tokenizer "$data/gpt2" >/dev/null 2>&1
common=(--config "$source_dir/configs/tiny-llama.yaml" --set "data.train=$work/train.h5"
        --set "data.val=$work/val.h5" --set train.steps=6 --set train.log_every=1
        --set train.eval_every=0 --set model.n_layers=2 --set train.global_batch=8 --set train.micro_batch=4)
losses() { grep -o '"loss":[0-9.eE+-]*' "$1/metrics.jsonl" | cut -d: -f2 | xargs printf '%.5f\n'; }

export OMP_NUM_THREADS=1
"$strata" train "${common[@]}" --set "train.out_dir=$work/straight" --set checkpoint.every=0 2>/dev/null
"$mpiexec" -np 2 --oversubscribe "$strata" train "${common[@]}" --set "train.out_dir=$work/split" \
  --set parallel.tp=2 --set checkpoint.every=4 2>/dev/null
rm -rf "$work/split/checkpoints/step-000006"  # as if the run had stopped after step 4's checkpoint
"$strata" train "${common[@]}" --set "train.out_dir=$work/split" --set checkpoint.every=4 \
  --resume auto 2>/dev/null

echo "one process:         $(losses "$work/straight" | xargs)"
echo "tp2 to 4, resumed 1: $(losses "$work/split" | xargs)"
[[ "$(losses "$work/straight")" == "$(losses "$work/split")" ]] || { echo "FAIL: the curves differ"; exit 1; }
[[ $(losses "$work/split" | wc -l) -eq 6 ]] || { echo "FAIL: expected 6 logged steps"; exit 1; }
echo "PASS"

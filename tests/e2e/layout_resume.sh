#!/usr/bin/env bash
# End to end through the command line: a run under one layout writes a checkpoint at step 4, a run
# under another layout resumes from it to step 6. Its losses must equal, to the printed digits, a
# one-process run that was never stopped: a checkpoint of any layout continues under any other.
# Legs (config: the layout that writes -> the layout that resumes):
#   tiny-llama: tp2 -> one process;  tiny-llama: pp2 (1f1b) -> one process;
#   tiny-gpt2 (tied embeddings): one process -> pp2, so the last stage's mirror of the token table
#   is read back from the first stage's tensor;
#   tiny-llama with MoE layers: dp2 x ep2 (each rank writes its own experts) -> one process;
#   ZeRO stage 1 (each dp rank writes its rows of the optimizer state): tiny-gpt2 dp2 -> one
#   process, tiny-llama one process -> dp2;
#   ZeRO stage 2 with the optimizer offloaded -> stage 3 (tiny-gpt2, dp2); stage 3 with optimizer
#   and parameters offloaded (each dp rank writes its rows of the parameters) -> one process.
# usage: layout_resume.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
strata=$1 source_dir=$2 mpiexec=$3
data=${STRATA_DATA_DIR:-$source_dir/data}
[[ -f "$data/brown/text/ca01.txt" ]] || { echo "FAIL: $data/brown/text missing: run scripts/fetch_data.sh"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$strata" tokenize --input "$data/brown/text" --output "$work/train.h5" --val-output "$work/val.h5" \
  --tokenizer "$data/gpt2" >/dev/null 2>&1
losses() { grep -o '"loss":[0-9.eE+-]*' "$1/metrics.jsonl" | cut -d: -f2 | xargs printf '%.5f\n'; }
export OMP_NUM_THREADS=1

# run CONFIG OUT_DIR LAYOUT [more --set arguments]: LAYOUT "" is one process, else one or more
# space-separated key=value settings ("parallel.tp=2") run under mpirun -np 2. MOE_SETTINGS, when
# set, adds its --set arguments to every run of a leg.
run() {
  local config=$1 out=$2 layout=$3
  shift 3
  local extra=()
  for kv in ${MOE_SETTINGS:-}; do extra+=(--set "$kv"); done
  local args=(train --config "$source_dir/configs/$config.yaml" --set "data.train=$work/train.h5"
              --set "data.val=$work/val.h5" --set train.steps=6 --set train.log_every=1
              --set train.eval_every=0 --set model.n_layers=2 --set train.global_batch=8
              --set train.micro_batch=4 --set "train.out_dir=$work/$out" "${extra[@]}" "$@")
  if [[ -z "$layout" ]]; then
    "$strata" "${args[@]}" 2>/dev/null
  else
    local sets=()
    for kv in $layout; do sets+=(--set "$kv"); done
    "$mpiexec" -np 2 --oversubscribe "$strata" "${args[@]}" "${sets[@]}" 2>/dev/null
  fi
}

failed=0
# leg CONFIG WRITER_LAYOUT RESUMER_LAYOUT
leg() {
  local config=$1 writer=$2 resumer=$3 name="$1: ${2:-one process} -> ${3:-one process}"
  local dir="leg_${config}_${writer//[^a-z0-9]/}_${resumer//[^a-z0-9]/}"
  run "$config" "$dir/straight" "" --set checkpoint.every=0
  run "$config" "$dir/split" "$writer" --set checkpoint.every=4
  rm -rf "$work/$dir/split/checkpoints/step-000006"  # as if the run had stopped after step 4
  run "$config" "$dir/split" "$resumer" --set checkpoint.every=4 --resume auto
  echo "$name"
  echo "  one process:      $(losses "$work/$dir/straight" | xargs)"
  echo "  stopped, resumed: $(losses "$work/$dir/split" | xargs)"
  if [[ "$(losses "$work/$dir/straight")" != "$(losses "$work/$dir/split")" ]]; then
    echo "  FAIL: the curves differ"; failed=1
  elif [[ $(losses "$work/$dir/split" | wc -l) -ne 6 ]]; then
    echo "  FAIL: expected 6 logged steps"; failed=1
  fi
}

leg tiny-llama parallel.tp=2 ""
leg tiny-llama parallel.pp=2 ""
leg tiny-gpt2 "" parallel.pp=2
MOE_SETTINGS="model.moe.n_experts=4 model.moe.every=2" leg tiny-llama "parallel.dp=2 parallel.ep=2" ""
leg tiny-gpt2 "parallel.dp=2 parallel.zero=1" ""
leg tiny-llama "" "parallel.dp=2 parallel.zero=1"
leg tiny-gpt2 "parallel.dp=2 parallel.zero=2 parallel.offload.optimizer=true" "parallel.dp=2 parallel.zero=3"
leg tiny-llama "parallel.dp=2 parallel.zero=3 parallel.offload.optimizer=true parallel.offload.params=true" ""
[[ $failed == 0 ]] || exit 1
echo "PASS"

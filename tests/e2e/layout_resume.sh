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
#   and parameters offloaded (each dp rank writes its rows of the parameters) -> one process;
#   tp2 x pp2 (4 ranks) -> one process and -> dp2 x tp2; ZeRO 2 -> 0; ep2 -> ep1 (the last three
#   against an uninterrupted run under the layout that resumes).
# usage: layout_resume.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
source "$(dirname "$0")/brown_workdir.sh"
losses() { grep -o '"loss":[0-9.eE+-]*' "$1/metrics.jsonl" | cut -d: -f2 | xargs printf '%.5f\n'; }
full_losses() { grep -o '"loss":[0-9.eE+-]*' "$1/metrics.jsonl" | cut -d: -f2; }

# run CONFIG OUT_DIR LAYOUT [more --set arguments]: LAYOUT "" is one process, else one or more
# space-separated key=value settings ("parallel.tp=2") run under mpirun with dp*tp*pp*sp ranks.
# MOE_SETTINGS, when set, adds its --set arguments to every run of a leg.
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
    local np=1
    for kv in $layout; do
      case $kv in parallel.dp=*|parallel.tp=*|parallel.pp=*|parallel.sp=*) np=$((np * ${kv#*=})) ;; esac
    done
    "$mpiexec" -np "$np" --oversubscribe "$strata" "${args[@]}" "${sets[@]}" 2>/dev/null
  fi
}

failed=0
# leg CONFIG WRITER_LAYOUT RESUMER_LAYOUT [STRAIGHT_LAYOUT]: the uninterrupted run is one process's,
# or STRAIGHT_LAYOUT's (the resumer's layout, where its sums differ from one process's in the last
# printed digit: then the curves are compared to 1e-5 relative instead of digit for digit).
leg() {
  local config=$1 writer=$2 resumer=$3 straight=${4:-} name="$1: ${2:-one process} -> ${3:-one process}"
  local dir="leg_${config}_${writer//[^a-z0-9]/}_${resumer//[^a-z0-9]/}"
  run "$config" "$dir/straight" "$straight" --set checkpoint.every=0
  run "$config" "$dir/split" "$writer" --set checkpoint.every=4
  rm -rf "$work/$dir/split/checkpoints/step-000006"  # as if the run had stopped after step 4
  run "$config" "$dir/split" "$resumer" --set checkpoint.every=4 --resume auto
  echo "$name"
  echo "  uninterrupted (${straight:-one process}): $(losses "$work/$dir/straight" | xargs)"
  echo "  stopped, resumed: $(losses "$work/$dir/split" | xargs)"
  if [[ -z "$straight" && "$(losses "$work/$dir/straight")" != "$(losses "$work/$dir/split")" ]]; then
    echo "  FAIL: the curves differ"; failed=1
  elif [[ -n "$straight" ]] && ! paste <(full_losses "$work/$dir/straight") <(full_losses "$work/$dir/split") |
      awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) bad = 1 } END { exit bad }'; then
    echo "  FAIL: the curves differ by more than 1e-5 relative"; failed=1
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
# Four ranks: tp2 x pp2 -> one process and -> dp2 x tp2; ZeRO 2 -> ZeRO 0; ep2 -> ep1 (issue 10).
leg tiny-llama "parallel.tp=2 parallel.pp=2" ""
leg tiny-gpt2 "parallel.tp=2 parallel.pp=2" "parallel.dp=2 parallel.tp=2" "parallel.dp=2 parallel.tp=2"
leg tiny-gpt2 "parallel.dp=2 parallel.zero=2" "parallel.dp=2" "parallel.dp=2"
MOE_SETTINGS="model.moe.n_experts=4 model.moe.every=2" leg tiny-llama "parallel.dp=2 parallel.ep=2" "parallel.dp=2" "parallel.dp=2"
[[ $failed == 0 ]] || exit 1
echo "PASS"

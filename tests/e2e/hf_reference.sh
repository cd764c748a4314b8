#!/usr/bin/env bash
# Hugging Face export against transformers: a tp2 GPT-2 and a pp2 Llama (GQA) checkpoint are
# exported with strata convert --to-hf, loaded with from_pretrained, and their logits compared with
# Strata's on the same tokens (scripts/reference/hf_logits.py). Skipped (77) where PyTorch or
# transformers is missing: they are installed on the GPU machine only.
# usage: hf_reference.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
python3 -c "import torch, transformers" 2>/dev/null || { echo "hf_reference: skipped (no torch/transformers)"; exit 77; }
source "$(dirname "$0")/brown_workdir.sh"
status=0
for leg in "tiny-gpt2 parallel.tp=2" "tiny-llama parallel.pp=2"; do
  set -- $leg
  "$mpiexec" -np 2 --oversubscribe "$strata" train --config "$source_dir/configs/$1.yaml" \
    --set "data.train=$work/train.h5" --set "data.val=$work/val.h5" --set train.steps=3 \
    --set train.eval_every=0 --set model.n_layers=2 --set train.global_batch=8 --set train.micro_batch=2 \
    --set "$2" --set "train.out_dir=$work/run_$1" >/dev/null 2>&1
  ckpt="$work/run_$1/checkpoints/step-000003"
  "$strata" convert "$ckpt" --to-hf "$work/hf_$1" --tokenizer "$data/gpt2" >/dev/null
  python3 "$source_dir/scripts/reference/hf_logits.py" --strata "$strata" --checkpoint "$ckpt" \
    --hf "$work/hf_$1" --tokenizer "$data/gpt2" || status=1
done
exit $status

#!/usr/bin/env bash
# Strata's CPU model against an independent PyTorch implementation of its definitions
# (scripts/reference/strata_torch.py). Four tiny models, each trained a few steps on the synthetic
# corpus (so norms, biases and embeddings have left their initial values) and checkpointed, one of
# them under tp2 (so the reference assembles sharded tensors; Strata's dump is always one process):
#   gpt2   LayerNorm, GELU, learned positions, biases, tied embeddings
#   llama  RMSNorm (eps 1e-6), SwiGLU, RoPE (theta 1000), GQA (4 query heads on 2 kv heads)
#   moe    Llama-style, 4 SwiGLU experts in every layer, top-2, capacity 1.0 (drops), aux and
#          z-loss, one kv head (MQA); trained under tp2 (vocabulary, heads and experts split)
#   switch GPT-2-style, layer 1 only an MoE of 4 GELU experts with biases, top-1
# On one batch (a few targets ignored, ids over the whole vocabulary) strata_dump_grads writes
# Strata's loss, logits and every gradient in f32 and in f64; the reference (f64) must match each
# tensor within 1e-5 (f32) and 1e-10 (f64) of its largest magnitude, the MoE routing exactly.
# Skipped (77) when python3 cannot import torch and h5py.
# usage: torch_reference.sh STRATA_BINARY SOURCE_DIR MPIEXEC DUMP_GRADS_BINARY
set -euo pipefail
strata=$1 source_dir=$2 mpiexec=$3 dump_grads=$4
# Debian's python3-torch lives in the system interpreter, which a python3 earlier on PATH (pyenv,
# a virtual environment) may not see.
python= why=
for candidate in "${STRATA_PYTHON:-python3}" /usr/bin/python3; do
  if out=$("$candidate" -c 'import torch, h5py, yaml' 2>&1); then python=$candidate; break; fi
  why=${why:-${out##*$'\n'}}  # the first interpreter's last line: what it lacks
done
if [[ -z $python ]]; then
  echo "torch_reference: skipped, python3 cannot import torch, h5py and yaml ($why)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dump_grads" corpus "$work"
reference=$source_dir/scripts/reference/strata_torch.py
small="model.n_layers=2 model.max_seq_len=32 train.seq_len=16 train.micro_batch=4 train.global_batch=8
       train.steps=4 train.eval_every=0 optim.lr=0.02 optim.warmup_steps=1"
legs=(  # name, config, processes (tp), overrides
  "gpt2 tiny-gpt2 1 model.vocab_size=131 model.d_model=48 model.n_heads=4 model.n_kv_heads=4 model.d_ff=192"
  "llama tiny-llama 1 model.vocab_size=160 model.d_model=64 model.n_heads=4 model.n_kv_heads=2 model.d_ff=112
   model.rope_theta=1000 model.norm_eps=1e-6"
  "moe tiny-llama 2 model.vocab_size=160 model.d_model=32 model.n_heads=4 model.n_kv_heads=1 model.d_ff=48
   model.moe.n_experts=4 model.moe.top_k=2 model.moe.capacity_factor=1.0 model.moe.aux_loss_coef=0.01
   model.moe.z_loss_coef=0.001 parallel.tp=2"
  "switch tiny-gpt2 1 model.vocab_size=128 model.d_model=32 model.n_heads=2 model.n_kv_heads=2
   model.d_ff=64 model.moe.n_experts=4 model.moe.top_k=1 model.moe.every=2 model.moe.capacity_factor=1.5"
)
status=0
for leg in "${legs[@]}"; do
  set -- $leg
  name=$1 config=$2 processes=$3
  shift 3
  sets=()
  for kv in $small "$@"; do sets+=(--set "$kv"); done
  vocab=$(printf '%s\n' "$@" | sed -n 's/^model.vocab_size=//p')
  launch=()
  ((processes == 1)) || launch=("$mpiexec" -np "$processes" --oversubscribe)
  if ! "${launch[@]}" "$strata" train --config "$source_dir/configs/$config.yaml" \
      --set "data.train=$work/train.h5" --set "data.val=$work/val.h5" --set "train.out_dir=$work/$name" \
      "${sets[@]}" >"$work/$name.log" 2>&1; then
    cat "$work/$name.log"
    echo "torch_reference: FAIL: $name: strata train failed"
    status=1
    continue
  fi
  ckpt=$work/$name/checkpoints/step-000004
  "$python" "$reference" ids "$work/$name.ids.h5" --vocab "$vocab" --batch 2 --seq 16 --ignore 3
  "$dump_grads" "$ckpt" "$work/$name.ids.h5" "$work/$name.f32.h5" f32 >/dev/null
  "$dump_grads" "$ckpt" "$work/$name.ids.h5" "$work/$name.f64.h5" f64 >/dev/null
  dumps=("$work/$name.f32.h5" "$work/$name.f64.h5")
  # The CUDA model too (a GPU, or the simulated GPU's dump program).
  if [[ -n "${STRATA_DUMP_GRADS_CUDA:-}" ]]; then
    "$STRATA_DUMP_GRADS_CUDA" "$ckpt" "$work/$name.ids.h5" "$work/$name.cuda.h5" f32 cuda >/dev/null || status=1
    dumps+=("$work/$name.cuda.h5")
  fi
  "$python" "$reference" check --checkpoint "$ckpt" --ids "$work/$name.ids.h5" --label "$name" \
    --strata "${dumps[@]}" --tolerance 1e-5 --tolerance-f64 1e-10 || status=1
done
exit $status

#!/usr/bin/env bash
# One GPU, GPT-2 124M (L12, d768, 12 heads, seq 1024, vocabulary padded to 50304), bf16, after
# warm-up: tokens/s, MFU and peak memory for Strata and for PyTorch (torch.compile, bf16 autocast,
# SDPA, fused AdamW; scripts/bench/torch_gpt2.py) in one run, and the ratio. Each side gets the
# largest micro-batch of 32, 16, 8, 4 that runs. Results in OUTDIR/summary.md.
# MFU = tokens/s * (6 N + 6 L d seq) / 989e12 (H100/H200 dense bf16).
# usage: scripts/bench/gpu_train.sh STRATA_BINARY OUTDIR [TRAIN_H5]
set -uo pipefail
strata=$1 out=$2 data=${3:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
if [[ -z "$data" ]]; then
  text=${STRATA_DATA_DIR:-$root/data}
  "$strata" tokenize --input "$text/brown/text" --output "$out/train.h5" --tokenizer "$text/gpt2" >"$out/tokenize.log" 2>&1 ||
    { echo "gpu_train: cannot tokenize $text/brown/text (scripts/fetch_data.sh)"; exit 1; }
  data=$out/train.h5
fi
steps=25 warmup=10
strata_mb=0
for mb in 32 16 8 4; do
  rm -rf "$out/strata"
  if timeout 300 "$strata" train --config "$root/configs/gpt2-124m.yaml" --set train.device=cuda \
      --set train.precision=bf16 --set model.vocab_size=50304 --set "data.train=$data" --set train.eval_every=0 \
      --set train.micro_batch=$mb --set train.global_batch=$mb --set train.steps=$((steps + warmup)) \
      --set train.log_every=1 --set optim.warmup_steps=5 --set checkpoint.every=0 \
      --set "train.out_dir=$out/strata" >"$out/strata_mb$mb.log" 2>&1; then
    strata_mb=$mb
    break
  fi
done
torch_mb=0
for mb in 32 16 8 4; do
  if timeout 300 python3 "$root/scripts/bench/torch_gpt2.py" --micro-batch $mb --steps $steps --warmup $warmup \
      >"$out/torch_mb$mb.json" 2>"$out/torch_mb$mb.log"; then
    torch_mb=$mb
    break
  fi
done
python3 - "$out" "$strata_mb" "$torch_mb" "$warmup" <<'PY'
import json, statistics, sys
out, smb, tmb, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
L, d, seq = 12, 768, 1024
def flops_per_token(n):
    return 6 * n + 6 * L * d * seq
lines = ["## GPT-2 124M, bf16, one GPU", "", "| | micro-batch | tokens/s | MFU | peak MiB |", "|---|---|---|---|---|"]
s_tps = t_tps = None
n = 124_475_904  # with the vocabulary padded to 50304 (tied head)
if smb:
    rows = [json.loads(l) for l in open(f"{out}/strata/metrics.jsonl") if '"tokens_per_s"' in l]
    rows = rows[warmup:]
    s_tps = statistics.median(r["tokens_per_s"] for r in rows)
    peak = max(r.get("peak_mb", 0) for r in rows)
    lines.append(f"| Strata | {smb} | {s_tps:,.0f} | {100 * s_tps * flops_per_token(n) / 989e12:.1f}% | {peak:,.0f} |")
else:
    lines.append("| Strata | - | did not run (see strata_mb*.log) | | |")
if tmb:
    t = json.load(open(f"{out}/torch_mb{tmb}.json"))
    t_tps = t["tokens_per_s"]
    lines.append(f"| PyTorch (compile, SDPA, fused AdamW) | {tmb} | {t_tps:,.0f} | {100 * t_tps * flops_per_token(t['params']) / 989e12:.1f}% | {t['peak_mb']:,.0f} |")
else:
    lines.append("| PyTorch | - | did not run (see torch_mb*.log) | | |")
if s_tps and t_tps:
    lines += ["", f"Strata / PyTorch tokens/s: {s_tps / t_tps:.2f}x (target 1.1x; MFU target 50%)"]
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if smb and tmb else 1)
PY

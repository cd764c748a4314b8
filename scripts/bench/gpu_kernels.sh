#!/usr/bin/env bash
# One GPU: Strata's flash attention beside PyTorch's scaled_dot_product_attention (bf16, causal,
# seq 1024/4096, head_dim 64/128), and the decode path at batch 1 against the device's own copy
# bandwidth. Targets (issue 18): forward + backward at least 0.8x SDPA's speed; decode at least
# 70% of the copy bandwidth. Results in OUTDIR/summary.md, the raw lines in OUTDIR/*.jsonl.
# usage: scripts/bench/gpu_kernels.sh BENCH_GPU_KERNELS_BINARY OUTDIR
set -uo pipefail
bench=$1 out=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
timeout 240 "$bench" >"$out/strata.jsonl" 2>"$out/strata.log" || echo "gpu_kernels: $bench failed (see strata.log)"
timeout 240 python3 "$root/scripts/bench/torch_attention.py" >"$out/torch.jsonl" 2>"$out/torch.log" ||
  echo "gpu_kernels: torch_attention.py failed (see torch.log)"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def rows(name):
    try:
        return [json.loads(l) for l in open(f"{out}/{name}.jsonl") if l.startswith("{")]
    except OSError:
        return []
ours, theirs = rows("strata"), rows("torch")
key = lambda r: (r["seq"], r["head_dim"])
sdpa = {key(r): r for r in theirs if r["bench"] == "attention"}
lines = ["## Flash attention vs PyTorch SDPA (bf16, causal, 16384 tokens, 2048 wide)", "",
         "| seq | head_dim | Strata fwd ms | SDPA fwd ms | Strata fwd+bwd ms | SDPA fwd+bwd ms | fwd+bwd TFLOP/s (Strata / SDPA) | speed ratio fwd+bwd (target >= 0.8) |",
         "|---|---|---|---|---|---|---|---|"]
for r in (r for r in ours if r["bench"] == "attention"):
    t = sdpa.get(key(r))
    if t:
        lines.append(f"| {r['seq']} | {r['head_dim']} | {r['fwd_ms']:.3f} | {t['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
                     f"{t['fwd_bwd_ms']:.3f} | {r['fwd_bwd_tflops']:.0f} / {t['fwd_bwd_tflops']:.0f} | "
                     f"{t['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f} |")
    else:
        lines.append(f"| {r['seq']} | {r['head_dim']} | {r['fwd_ms']:.3f} | - | {r['fwd_bwd_ms']:.3f} | - | {r['fwd_bwd_tflops']:.0f} / - | - |")
copy = next((r for r in ours if r["bench"] == "copy"), None)
lines += ["", "## Decode at batch 1 (32 heads, 8 kv heads, head_dim 128, bf16) vs device copy bandwidth", ""]
if copy:
    lines.append(f"Device-to-device copy of {copy['bytes'] / 2**30:.0f} GiB: {copy['gb_per_s']:.0f} GB/s (read + written).")
    lines += ["", "| cache | ms | GB/s | share of copy bandwidth (target >= 70%) |", "|---|---|---|---|"]
    for r in (r for r in ours if r["bench"] == "decode"):
        lines.append(f"| {r['cache']} | {r['ms']:.4f} | {r['gb_per_s']:.0f} | {100 * r['gb_per_s'] / copy['gb_per_s']:.0f}% |")
else:
    lines.append("bench_gpu_kernels did not run (see strata.log)")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

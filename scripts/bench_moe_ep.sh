#!/usr/bin/env bash
# Expert parallelism on this machine: dp2 runs of an MoE model (configs/tiny-llama.yaml with
# d_model 256, d_ff 704, 8 experts top-2 in every layer, capacity $CAPACITY (default 1.25; 0:
# dropless), fp32; one OpenMP thread per rank) at the same global batch, experts replicated
# (ep 1) and split (ep 2).
#   - step time: median step_ms of steps 3.. (metrics.jsonl), ep2 against ep1;
#   - all-to-all bytes rank 0 sent to the other rank per step (metrics.jsonl: all_to_all_bytes)
#     against the prediction for uniform routing and no drops:
#     tokens x top_k x d_model x 4 bytes x 2 (dispatch + combine) x (ep - 1) / ep, per MoE layer,
#     twice (forward and backward), tokens = this rank's tokens per step.
# usage: scripts/bench_moe_ep.sh BUILD_DIR TRAIN.H5 VAL.H5 [STEPS]
set -euo pipefail
build=$1 train=$2 val=$3 steps=${4:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
moe=(--set model.d_model=256 --set model.d_ff=704 --set model.moe.n_experts=8 --set model.moe.top_k=2
     --set "model.moe.capacity_factor=${CAPACITY:-1.25}" --set model.moe.every=1 --set train.precision=fp32
     --set train.seq_len=64 --set train.micro_batch=8 --set train.global_batch=32)
run() {
  OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe --allow-run-as-root "$build/strata" train \
    --config configs/tiny-llama.yaml --set "data.train=$train" --set "data.val=$val" \
    --set "train.steps=$steps" --set train.log_every=1 --set "train.out_dir=$work/$1" \
    --set train.eval_every=0 --set parallel.dp=2 --set "parallel.ep=$2" --set checkpoint.every=0 \
    "${moe[@]}" >/dev/null 2>&1
}
run ep1 1
run ep2 2
/usr/bin/python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
def rows(run):
    return [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")][2:]
t1 = statistics.median(r["step_ms"] for r in rows("ep1"))
t2 = statistics.median(r["step_ms"] for r in rows("ep2"))
moved = statistics.median(r["all_to_all_bytes"] for r in rows("ep2"))
drop = statistics.mean(statistics.mean(r["expert_drop_rate"].values()) for r in rows("ep2"))
tokens, top_k, d, layers, ep = 32 * 64 // 2, 2, 256, 4, 2
predicted = tokens * top_k * d * 4 * 2 * (ep - 1) / ep * layers * 2
print(f"steps measured: {len(rows('ep2'))} (of each run, after 2 warm-up)")
print(f"step time  ep1 (experts replicated): {t1:8.1f} ms   ep2 (experts split): {t2:8.1f} ms"
      f"   ep2/ep1 = {t2 / t1:.3f}")
print(f"all-to-all bytes sent by rank 0 per step: {moved / 1e6:.3f} MB, predicted {predicted / 1e6:.3f} MB"
      f" (uniform routing, no drops): measured/predicted = {moved / predicted:.3f};"
      f" mean drop rate {100 * drop:.1f}%")
PY

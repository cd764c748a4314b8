#!/usr/bin/env bash
# The collective watchdog: rank 1 of a 2-rank run stops responding at step 3 (STRATA_FAULT_HANG);
# rank 0 waits in the gradient all-reduce. With parallel.timeout_s 5 the run must end (nonzero)
# within 5 + 10 s, with one line naming the operation, its group, the step and rank 1's state;
# --rank-logs leaves each rank's own log. With BACKEND nccl (STRATA_BINARY the simulated GPU's
# strata_gpusim) the run trains on CUDA over NCCL, and rank 0 must also say it aborted its NCCL
# communicators before it ended.
# usage: watchdog.sh STRATA_BINARY SOURCE_DIR MPIEXEC [BACKEND]
set -euo pipefail
source "$(dirname "$0")/brown_workdir.sh"
backend=${4:-mpi}
extra=()
# On the simulated GPU a step of the tiny model takes long (its queued work runs when a wait comes,
# inside the first all-reduce): a narrower one keeps each step near a second, under the timeout.
[[ $backend == mpi ]] || extra=(--set train.device=cuda --set "parallel.backend=$backend" --set model.d_model=32
                                --set model.d_ff=64 --set train.seq_len=16)
start=$(date +%s)
status=0
STRATA_FAULT_HANG=1:3 timeout 120 "$mpiexec" -np 2 --oversubscribe -x STRATA_FAULT_HANG "$strata" train \
  --config "$source_dir/configs/tiny-llama.yaml" --set "data.train=$work/train.h5" --set "data.val=$work/val.h5" \
  --set train.steps=20 --set train.eval_every=0 --set model.n_layers=2 --set train.global_batch=8 \
  --set train.micro_batch=4 --set parallel.dp=2 --set parallel.timeout_s=5 --set checkpoint.every=0 \
  --set "train.out_dir=$work/run" --rank-logs "$work/logs" "${extra[@]}" >/dev/null 2>"$work/err" || status=$?
elapsed=$(($(date +%s) - start))
line=$(grep 'has not finished after' "$work/err" | head -1 || true)
failed=0
[[ $status != 0 ]] || { echo "FAIL: the hung run exited 0"; failed=1; }
[[ $status != 124 ]] || { echo "FAIL: the hung run was still running after 120 s"; failed=1; }
for want in "rank 0 of 2" "all_reduce" "group '" "at step 3" "rank 1 (step 3"; do
  [[ "$line" == *"$want"* ]] || { echo "FAIL: the message lacks '$want': $line"; failed=1; }
done
if [[ $backend == nccl ]]; then
  grep -q "rank 0 aborted its [0-9]* NCCL communicators (ncclCommAbort)" "$work/err" ||
    { echo "FAIL: rank 0 did not report aborting its NCCL communicators"; failed=1; }
fi
# The tokenizer and start-up come before the first step; the bound is on the time after it.
echo "watchdog: exit $status after ${elapsed}s: $line"
((elapsed <= 5 + 10 + 20)) || { echo "FAIL: took ${elapsed}s"; failed=1; }
# --rank-logs: each rank's own lines, rank 1's info lines included (stderr has rank 0's only).
grep -q "STRATA_FAULT_HANG: rank 1 stops responding" "$work/logs/rank-1.log" 2>/dev/null ||
  { echo "FAIL: logs/rank-1.log lacks rank 1's warning"; failed=1; }
grep -q "info: training llama" "$work/logs/rank-0.log" 2>/dev/null || { echo "FAIL: logs/rank-0.log lacks its info"; failed=1; }
[[ $failed == 0 ]] || { cat "$work/err"; exit 1; }
echo PASS

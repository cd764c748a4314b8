#!/usr/bin/env bash
# Preemption end to end: a 2-rank run gets SIGTERM on both ranks (as a scheduler sends it) in
# the middle of training; it must finish the step, write a checkpoint and exit 0; `--resume auto`
# then continues, and its losses equal an uninterrupted run's bit for bit (as metrics.jsonl
# prints them). SIGUSR1 is checked the same way; the uninterrupted run is started through
# launch/mpirun.sh. Then kill -9 of one rank while a checkpoint is being written: the previous one
# stays loadable and is the one --resume auto takes. (Under plain mpirun, SIGTERM to mpirun itself makes
# Open MPI kill the job; SIGUSR1 to mpirun is forwarded to the ranks: docs/launching.md.)
# usage: preempt.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
source "$(dirname "$0")/brown_workdir.sh"
steps=80
failed=0
settings=(--config "$source_dir/configs/tiny-llama.yaml" --set "data.train=$work/train.h5"
          --set "data.val=$work/val.h5" --set train.steps=$steps --set train.eval_every=0
          --set model.n_layers=2 --set model.d_model=64 --set model.d_ff=128 --set train.global_batch=8
          --set train.micro_batch=4 --set train.seq_len=32 --set train.log_every=1 --set parallel.dp=2
          --set checkpoint.every=0)
train() {  # OUT_DIR [more args]
  "$mpiexec" -np 2 --oversubscribe "$strata" train "${settings[@]}" --set "train.out_dir=$work/$1" "${@:2}"
}
losses() { grep -o '"loss":[0-9.eE+-]*' "$work/$1/metrics.jsonl" | cut -d: -f2; }
# The uninterrupted run goes through launch/mpirun.sh, which takes the rank count from the layout.
STRATA="$strata" MPIRUN="$mpiexec" "$source_dir/launch/mpirun.sh" train "${settings[@]}" \
  --set "train.out_dir=$work/straight" >/dev/null 2>&1 || { echo "FAIL: launch/mpirun.sh failed"; exit 1; }
[[ $(losses straight | grep -c '') == "$steps" ]] || { echo "FAIL: the launcher's run did not finish"; exit 1; }
for signal in TERM USR1; do
  train "split_$signal" >/dev/null 2>"$work/err_$signal" &
  launcher=$!
  # Wait for a few steps, then signal both ranks.
  for _ in $(seq 200); do
    [[ -f "$work/split_$signal/metrics.jsonl" && $(grep -c '' "$work/split_$signal/metrics.jsonl") -ge 5 ]] && break
    sleep 0.05
  done
  # The launcher runs mpirun, whose children are the ranks: signal those, as a scheduler does.
  ranks=$(pgrep -P "$(pgrep -P "$launcher" | head -1)" | xargs)
  [[ -n "$ranks" ]] && kill "-$signal" $ranks || true
  status=0
  wait "$launcher" || status=$?
  stopped=$(grep -c '' "$work/split_$signal/metrics.jsonl")
  ckpt=$(ls -d "$work/split_$signal/checkpoints/step-"* 2>/dev/null | tail -1)
  if [[ $status != 0 ]]; then
    echo "FAIL: SIG$signal: the run exited with $status"; cat "$work/err_$signal"; failed=1; continue
  fi
  if [[ $stopped -ge $steps || -z "$ckpt" ]]; then
    echo "FAIL: SIG$signal: the run was not stopped early with a checkpoint ($stopped steps, '$ckpt')"; failed=1; continue
  fi
  train "split_$signal" --resume auto >/dev/null 2>&1
  if [[ "$(losses straight)" != "$(losses "split_$signal")" ]]; then
    echo "FAIL: SIG$signal: the resumed curve differs from the uninterrupted one"; failed=1
  else
    echo "SIG$signal after step $stopped: checkpoint $(basename "$ckpt"), exit 0; resumed to step $steps, every loss equal"
  fi
done
# kill -9 of one rank while a checkpoint is being written: the previous checkpoint stays complete
# and loadable, and --resume auto never picks the partial one.
"$mpiexec" -np 2 --oversubscribe "$strata" train "${settings[@]}" --set checkpoint.every=1 --set checkpoint.keep=0 \
  --set "train.out_dir=$work/killed" >/dev/null 2>&1 &
launcher=$!
killed=""
for _ in $(seq 2000); do
  partial=$(ls -d "$work"/killed/checkpoints/.step-*.partial 2>/dev/null | head -1 || true)
  if [[ -n "$partial" && $(ls -d "$work"/killed/checkpoints/step-* 2>/dev/null | wc -l) -ge 2 ]]; then
    rank=$(pgrep -P "$launcher" | head -1)
    kill -9 "$rank" && killed=$partial
    break
  fi
  sleep 0.005
done
wait "$launcher" 2>/dev/null || true
if [[ -z "$killed" ]]; then
  echo "FAIL: kill -9 during a checkpoint: never caught a checkpoint being written"; failed=1
else
  latest=$(ls -d "$work"/killed/checkpoints/step-* | sort | tail -1)
  if ! "$strata" convert "$latest" --inspect >/dev/null 2>&1; then
    echo "FAIL: kill -9 during a checkpoint: the newest complete checkpoint $latest does not load"; failed=1
  else
    resumed=$("$mpiexec" -np 2 --oversubscribe "$strata" train "${settings[@]}" --set train.steps=$steps \
      --set "train.out_dir=$work/killed" --resume auto 2>&1 | grep -o 'resumed from [^ ]*' | head -1)
    if [[ "$resumed" != "resumed from $latest" ]]; then
      echo "FAIL: kill -9 during a checkpoint: expected to resume from $latest, got '$resumed'"; failed=1
    else
      echo "kill -9 while $(basename "$killed") was written: $(basename "$latest") still loads, and --resume auto took it"
    fi
  fi
fi

[[ $failed == 0 ]] || exit 1
echo PASS

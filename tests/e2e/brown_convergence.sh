#!/usr/bin/env bash
# End to end on the real corpus: tokenize the Brown corpus, train configs/tiny-llama.yaml for a
# fixed number of steps on the CPU, and require the validation loss to fall below a measured
# figure, within a time limit; then plot the curve, and check that int8 weights keep the
# validation perplexity within 2%.
#
# usage: brown_convergence.sh STRATA_BINARY SOURCE_DIR
# The threshold: this run measured val_loss 6.940 after 150 steps (seed 1234, 2 threads; see
# docs/benchmarks.md). A uniform guess is ln(50257) = 10.8 and the run starts at 10.9; the bound
# 7.1 leaves 0.16 nats for other BLAS builds and thread counts, while the same model after 50
# steps, which has learned little beyond token frequencies, stands at 7.36.
# Time: ~80 s alone on the 2-core CI machine (2000 tokens/s); the limit is the 3 minutes.
set -euo pipefail
strata=$1
source_dir=$2
data=${STRATA_DATA_DIR:-$source_dir/data}
steps=150
threshold=7.1
time_limit_s=180

for f in "$data/brown/text/ca01.txt" "$data/gpt2/encoder.json" "$data/gpt2/vocab.bpe"; do
  [[ -f "$f" ]] || { echo "FAIL: $f missing: run scripts/fetch_data.sh (scripts/test.sh does)"; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$strata" tokenize --input "$data/brown/text" --output "$work/train.h5" --val-output "$work/val.h5" \
  --tokenizer "$data/gpt2" --val-fraction 0.01
start=$(date +%s)
"$strata" train --config "$source_dir/configs/tiny-llama.yaml" --set "data.train=$work/train.h5" \
  --set "data.val=$work/val.h5" --set "train.out_dir=$work/run" --set "train.steps=$steps" \
  --set train.eval_every=$steps --set train.log_every=25
elapsed=$(($(date +%s) - start))

val=$(grep -o '"val_loss":[0-9.eE+-]*' "$work/run/metrics.jsonl" | tail -1 | cut -d: -f2)
echo "brown_convergence: val_loss $val after $steps steps in ${elapsed}s (bound $threshold, ${time_limit_s}s)"
status=0
awk -v v="$val" -v t="$threshold" 'BEGIN { exit !(v < t) }' || { echo "FAIL: val_loss $val >= $threshold"; status=1; }
((elapsed <= time_limit_s)) || { echo "FAIL: took ${elapsed}s > ${time_limit_s}s"; status=1; }
[[ -f "$work/run/checkpoints/step-$(printf %06d $steps)/manifest.yaml" ]] || { echo "FAIL: no final checkpoint"; status=1; }
# Inference on the trained model: the validation perplexity with the blocks' linear weights in
# int8 within 2% of the model's own (fp32) weights.
ckpt="$work/run/checkpoints/step-$(printf %06d $steps)"
ppl() { "$strata" generate --checkpoint "$ckpt" --tokenizer "$data/gpt2" --eval "$work/val.h5" "$@" 2>/dev/null | awk '{ print $2 }'; }
full=$(ppl)
int8=$(ppl --quantize int8)
echo "brown_convergence: validation perplexity $full (fp32), $int8 (int8 weights)"
awk -v a="$full" -v b="$int8" 'BEGIN { d = (b - a) / a; if (d < 0) d = -d; exit !(a > 0 && d <= 0.02) }' ||
  { echo "FAIL: int8 perplexity $int8 is not within 2% of $full"; status=1; }
/usr/bin/python3 "$source_dir/scripts/plot_metrics.py" "$work/run" --out "$work/loss.png"
[[ -s "$work/loss.png" ]] || { echo "FAIL: no plot"; status=1; }
exit $status

#!/usr/bin/env bash
# The corpus of bad input in tests/data/bad/: every entry must be refused by the command that
# reads it with exactly one line on stderr containing the text of its .expect file, a nonzero
# exit, and nothing written where the command would write.
#   configs/X.yaml        strata train --config X.yaml (and strata estimate for layout faults)
#   manifests/X/          strata convert X --inspect, and --consolidate (which must write nothing)
#   safetensors/X         as model.safetensors of a Hugging Face folder: strata convert --from-hf
#   tokenizers/X/         strata tokenize --tokenizer X
# usage: bad_inputs.sh STRATA_BINARY SOURCE_DIR
set -euo pipefail
strata=$1 source_dir=$2
bad="$source_dir/tests/data/bad"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0 checked=0
# check NAME EXPECT_FILE OUTPUT_DIR COMMAND...: one error line with the expected text, nonzero exit,
# OUTPUT_DIR empty or absent.
check() {
  local name=$1 expect_file=$2 out=$3
  shift 3
  local pattern err status=0
  pattern=$(head -1 "$expect_file")
  err=$("$@" 2>&1 >/dev/null) || status=$?
  checked=$((checked + 1))
  if [[ $status == 0 ]]; then
    echo "FAIL: $name: accepted"; failed=1
  elif [[ $(grep -c '' <<<"$err") != 1 ]]; then
    echo "FAIL: $name: $(grep -c '' <<<"$err") lines on stderr: $err"; failed=1
  elif [[ "$err" != *"$pattern"* ]]; then
    echo "FAIL: $name: expected '$pattern' in: $err"; failed=1
  elif [[ -n "$out" && -n "$(ls -A "$out" 2>/dev/null)" ]]; then
    echo "FAIL: $name: wrote into $out"; failed=1
  fi
}
mkdir -p "$work/text"
echo "A few words to tokenize." > "$work/text/a.txt"

for f in "$bad"/configs/*.yaml; do
  name=configs/$(basename "$f" .yaml)
  check "$name" "${f%.yaml}.expect" "$work/out_$(basename "$f" .yaml)" \
    "$strata" train --config "$f" --set "train.out_dir=$work/out_$(basename "$f" .yaml)" --set data.train=/nonexistent.h5
done
for d in "$bad"/manifests/*/; do
  name=manifests/$(basename "$d")
  check "$name" "${d%/}.expect" "" "$strata" convert "$d" --inspect
  check "$name (consolidate)" "${d%/}.expect" "$work/cons_$(basename "$d")" \
    "$strata" convert "$d" --consolidate --out "$work/cons_$(basename "$d")"
done
for f in "$bad"/safetensors/*.safetensors; do
  name=safetensors/$(basename "$f" .safetensors)
  hf="$work/hf_$(basename "$f" .safetensors)"
  mkdir -p "$hf"
  cat > "$hf/config.json" <<'JSON'
{"model_type": "llama", "vocab_size": 11, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
 "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 8}
JSON
  cp "$f" "$hf/model.safetensors"
  check "$name" "${f%.safetensors}.expect" "$work/imp_$(basename "$f" .safetensors)" \
    "$strata" convert --from-hf "$hf" --out "$work/imp_$(basename "$f" .safetensors)"
done
for d in "$bad"/tokenizers/*/; do
  name=tokenizers/$(basename "$d")
  check "$name" "${d%/}.expect" "" \
    "$strata" tokenize --input "$work/text" --output "$work/tok_$(basename "$d").h5" --tokenizer "$d"
  [[ ! -e "$work/tok_$(basename "$d").h5" ]] || { echo "FAIL: $name: wrote a dataset"; failed=1; }
done
echo "bad inputs: $checked refusals checked"
[[ $failed == 0 ]] || exit 1
echo PASS

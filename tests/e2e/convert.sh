#!/usr/bin/env bash
# strata convert end to end: a tp2 GPT-2 checkpoint and a pp2 Llama checkpoint are inspected,
# consolidated into one file and resharded back (every tensor bitwise the same: the per-tensor
# checksums of --inspect agree), exported to Hugging Face format and imported again (the same
# parameters bitwise), and a run starts from the import (--init-from). Then bad input: a flipped
# byte, a truncated file, a missing rank file, a manifest from the future, a safetensors header
# whose offsets run past the file: each refused with one clear line, and nothing written. Also
# strata generate from those checkpoints (one process, tp2, the import; a repeated seed).
# usage: convert.sh STRATA_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
source "$(dirname "$0")/brown_workdir.sh"
failed=0
fail() { echo "FAIL: $*"; failed=1; }
tensors() { "$strata" convert "$1" --inspect | grep '^tensor' | grep -v "${2:-^$}"; }

train() {  # CONFIG OUT LAYOUT...
  local config=$1 out=$2
  shift 2
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  "$mpiexec" -np 2 --oversubscribe "$strata" train --config "$source_dir/configs/$config.yaml" \
    --set "data.train=$work/train.h5" --set "data.val=$work/val.h5" --set train.steps=2 \
    --set train.eval_every=0 --set model.n_layers=2 --set train.global_batch=8 --set train.micro_batch=2 \
    --set "train.out_dir=$work/$out" "${sets[@]}" >/dev/null 2>&1
}

for leg in "tiny-gpt2 parallel.tp=2" "tiny-llama parallel.pp=2"; do
  set -- $leg
  config=$1 layout=$2
  train "$config" "run_$config" "$layout"
  ckpt="$work/run_$config/checkpoints/step-000002"
  "$strata" convert "$ckpt" --inspect | grep "^format 1, step 2$" >/dev/null || fail "$config: --inspect lacks the format and step"
  "$strata" convert "$ckpt" --consolidate --out "$work/one_$config" >/dev/null
  "$strata" convert "$work/one_$config/step-000002" --layout --set "$layout" --out "$work/back_$config" >/dev/null
  [[ $(ls "$work/one_$config/step-000002" | grep -c '^rank-') == 1 ]] || fail "$config: consolidated into more than one file"
  if [[ "$(tensors "$ckpt")" != "$(tensors "$work/one_$config/step-000002")" ||
        "$(tensors "$ckpt")" != "$(tensors "$work/back_$config/step-000002")" ]]; then
    fail "$config: consolidate -> reshard back changed tensors"
  else
    echo "$config ($layout): consolidated and resharded back, $(tensors "$ckpt" | wc -l) tensors bitwise identical"
  fi
  "$strata" convert "$ckpt" --to-hf "$work/hf_$config" --tokenizer "$data/gpt2" >/dev/null
  "$strata" convert --from-hf "$work/hf_$config" --out "$work/imported_$config" >/dev/null
  if [[ "$(tensors "$ckpt" optim/)" != "$(tensors "$work/imported_$config/step-000000")" ]]; then
    fail "$config: Hugging Face export -> import changed parameters"
  else
    echo "$config: exported to Hugging Face and imported, $(tensors "$ckpt" optim/ | wc -l) parameters bitwise identical"
  fi
  # In shards of at most 10 MiB, with an index.
  "$strata" convert "$ckpt" --to-hf "$work/hfs_$config" --shard-mb 10 --tokenizer "$data/gpt2" >/dev/null
  [[ -f "$work/hfs_$config/model.safetensors.index.json" && $(ls "$work/hfs_$config" | grep -c 'of-.*safetensors') -gt 1 ]] ||
    fail "$config: --shard-mb 10 did not shard"
  "$strata" convert --from-hf "$work/hfs_$config" --out "$work/imported_sharded_$config" >/dev/null
  if [[ "$(tensors "$ckpt" optim/)" == "$(tensors "$work/imported_sharded_$config/step-000000")" ]]; then
    echo "$config: the same through $(ls "$work/hfs_$config" | grep -c 'of-.*safetensors') shards of at most 10 MiB"
  else
    fail "$config: sharded export -> import changed parameters"
  fi
  "$strata" train --config "$source_dir/configs/$config.yaml" --set "data.train=$work/train.h5" \
    --set "data.val=$work/val.h5" --set train.steps=1 --set train.eval_every=0 --set model.n_layers=2 \
    --set train.global_batch=8 --set train.micro_batch=4 --set "train.out_dir=$work/init_$config" \
    --init-from "$work/imported_$config/step-000000" >/dev/null 2>&1 || fail "$config: training from the import failed"
done

# strata generate from the tp2 checkpoint: greedy text the same on one process and on two
# tensor-parallel ranks, and on the Hugging Face round trip's import; a seed repeats sampled text.
ckpt="$work/run_tiny-gpt2/checkpoints/step-000002"
gen() { "$@" --tokenizer "$data/gpt2" --prompt "The jury said" --max-tokens 8 2>/dev/null; }
one=$(gen "$strata" generate --checkpoint "$ckpt")
two=$(gen "$mpiexec" -np 2 --oversubscribe "$strata" generate --checkpoint "$ckpt")
imported=$(gen "$strata" generate --checkpoint "$work/imported_tiny-gpt2/step-000000")
[[ -n "$one" && "$one" == "$two" && "$one" == "$imported" ]] || fail "generate: '$one' (one process), '$two' (tp2), '$imported' (imported)"
s1=$(gen "$strata" generate --checkpoint "$ckpt" --temperature 1 --top-k 20 --seed 9)
s2=$(gen "$strata" generate --checkpoint "$ckpt" --temperature 1 --top-k 20 --seed 9)
[[ -n "$s1" && "$s1" == "$s2" ]] || fail "generate: the same seed gave '$s1' and '$s2'"
echo "generate: greedy the same on 1 and 2 ranks and from the import; a seed repeats its sample"

# Bad input: each refused by --inspect and by --consolidate, which writes nothing.
ckpt="$work/run_tiny-gpt2/checkpoints/step-000002"
refused() {  # NAME PATTERN CHECKPOINT
  local name=$1 pattern=$2 bad=$3 err
  err=$("$strata" convert "$bad" --inspect 2>&1 >/dev/null) && { fail "$name: --inspect accepted it"; return; }
  [[ $(grep -c '' <<<"$err") == 1 && "$err" == *"$pattern"* ]] || fail "$name: expected one line with '$pattern', got: $err"
  "$strata" convert "$bad" --consolidate --out "$work/out_$name" >/dev/null 2>&1 && fail "$name: --consolidate accepted it"
  [[ -z "$(ls -A "$work/out_$name" 2>/dev/null)" ]] || fail "$name: --consolidate left files in its output"
  echo "$name: refused ($err)"
}
copy() { rm -rf "$work/bad"; cp -r "$ckpt" "$work/bad"; }
copy; printf '\x5a' | dd of="$work/bad/rank-00001.h5" bs=1 seek=5000 conv=notrunc status=none
refused flipped_byte "does not match its checksum" "$work/bad"
copy; truncate -s -100 "$work/bad/rank-00000.h5"
refused truncated "truncated" "$work/bad"
copy; rm "$work/bad/rank-00001.h5"
refused missing_rank_file "rank-00001.h5 is missing" "$work/bad"
copy; sed -i 's/^format: 1$/format: 9/' "$work/bad/manifest.yaml"
refused future_format "format version 9" "$work/bad"

# A safetensors header whose offsets run past the end of the file.
rm -rf "$work/badhf"; cp -r "$work/hf_tiny-gpt2" "$work/badhf"
python3 - "$work/badhf/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = open(path, 'rb').read()
n = struct.unpack('<Q', data[:8])[0]
header = json.loads(data[8:8 + n])
name = next(k for k in header if k != '__metadata__')
header[name]['data_offsets'] = [o + 10**9 for o in header[name]['data_offsets']]
text = json.dumps(header).encode()
text += b' ' * ((8 - len(text) % 8) % 8)
open(path, 'wb').write(struct.pack('<Q', len(text)) + text + data[8 + n:])
PY
err=$("$strata" convert --from-hf "$work/badhf" --out "$work/out_badhf" 2>&1 >/dev/null) && fail "bad safetensors accepted"
[[ "$err" == *"past the end of the data"* ]] || fail "bad safetensors: expected 'past the end of the data', got: $err"
[[ -z "$(ls -A "$work/out_badhf" 2>/dev/null)" ]] || fail "bad safetensors: --from-hf left files"
echo "safetensors offsets past the end: refused ($err)"

[[ $failed == 0 ]] || exit 1
echo "PASS"

# Sourced by the end-to-end scripts that take (STRATA_BINARY SOURCE_DIR MPIEXEC): sets strata,
# source_dir, mpiexec and a temporary $work (removed on exit) holding the Brown corpus tokenized
# as $work/train.h5 and $work/val.h5.
strata=$1 source_dir=$2 mpiexec=$3
data=${STRATA_DATA_DIR:-$source_dir/data}
[[ -f "$data/brown/text/ca01.txt" ]] || { echo "FAIL: $data/brown/text missing: run scripts/fetch_data.sh"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$strata" tokenize --input "$data/brown/text" --output "$work/train.h5" --val-output "$work/val.h5" \
  --tokenizer "$data/gpt2" >/dev/null 2>&1
export OMP_NUM_THREADS=1

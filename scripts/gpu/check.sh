#!/usr/bin/env bash
# The prepared GPU check: from a bare checkout to OUTDIR/summary.md in one call (docs/gpu.md).
#   scripts/gpu/check.sh OUTDIR              on a machine with a GPU (sm_90), every core
#   scripts/gpu/check.sh --simulate OUTDIR   the same steps on the simulated GPU (benchmarks aside)
# Steps, each with its log in OUTDIR and a line in the summary (PASS, FAIL, SKIP and why):
#   tools       what the machine lacks of what the build and the checks use (first lines of the summary)
#   build       configure and build only the targets the steps use (GPU: sm_90 only)
#   ops         every CUDA op against the CPU, three runs each, bit-identical (strata_cuda_tests
#               on the GPU; strata_gpusim_tests here)
#   model       tiny GPT-2/Llama on CUDA against the CPU: loss, every gradient, 20 bf16 steps,
#               greedy generation, checkpoints across devices
#   sim_beside  (GPU only) the simulated GPU's op and model tests on the same inputs, results beside
#               the GPU's in the summary
#   torch_ref   the PyTorch reference (scripts/reference/strata_torch.py) against Strata's CPU model
#               and its CUDA model, dense and MoE (tests/reference/torch_reference.sh)
#   hf_ref      e2e_hf_reference (transformers)
#   train       a short training run of tiny GPT-2 with train.device=cuda, then generation from
#               its checkpoint, and the checkpoint resumed on the CPU
#   bench       (GPU only) scripts/bench/gpu_train.sh, when present
#   kernels     (GPU only) scripts/bench/gpu_kernels.sh: flash attention vs SDPA, decode vs the
#               device's copy bandwidth
# Environment: STRATA_CHECK_BUILD (build folder, default build-gpucheck or build-gpusim-check),
# STRATA_CHECK_REUSE_BUILD=1 (use that folder as it is: CI passes its own build), STRATA_DATA_DIR.
# Exit status: 0 when no step failed.
set -uo pipefail
simulate=0
if [[ "${1:-}" == "--simulate" ]]; then simulate=1; shift; fi
[[ $# -eq 1 ]] || { echo "usage: scripts/gpu/check.sh [--simulate] OUTDIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${STRATA_DATA_DIR:-$root/data}
jobs=$(nproc)
# mpirun (the reference checks' tp2 leg) refuses root without these.
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
start=$(date +%s)
results=()  # "step|status|seconds|note"

record() { results+=("$1|$2|$3|$4"); echo "check: $1: $2 ($3 s) $4"; }
# step NAME NOTE COMMAND...: runs COMMAND with its output in OUTDIR/NAME.log.
step() {
  local name=$1 note=$2
  shift 2
  local t0=$(date +%s) rc
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  local status=PASS
  if [[ $rc -eq 77 ]]; then status=SKIP; elif [[ $rc -ne 0 ]]; then status="FAIL (exit $rc)"; fi
  record "$name" "$status" $(($(date +%s) - t0)) "$note"
  return $rc
}

# ---- tools ----
missing=()
for cmd in cmake g++ mpirun python3; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
if [[ $simulate -eq 0 ]]; then
  for cmd in nvcc nvidia-smi; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/$cmd ]] || missing+=("$cmd")
  done
fi
for header in hdf5.h yaml-cpp/yaml.h gtest/gtest.h CLI/CLI.hpp nlohmann/json.hpp cblas.h; do
  found=0
  for dir in /usr/include /usr/local/include /usr/include/hdf5/serial /usr/include/openblas /usr/include/x86_64-linux-gnu; do
    [[ -e "$dir/$header" ]] && found=1
  done
  [[ $found -eq 1 ]] || missing+=("$header")
done
# Debian's python3-torch is seen by the system interpreter, which a pyenv python3 may hide.
python=python3
/usr/bin/python3 -c 'import torch' 2>/dev/null && ! python3 -c 'import torch' 2>/dev/null && python=/usr/bin/python3
python_missing=$($python - <<'EOF' 2>/dev/null
import importlib.util
print(" ".join(m for m in ["torch", "h5py", "transformers", "safetensors"] if importlib.util.find_spec(m) is None))
EOF
)
tools_note="missing: ${missing[*]:-none}; python modules missing: ${python_missing:-none}"
{
  echo "$tools_note"
  [[ $simulate -eq 0 ]] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -2
  echo "cores: $jobs"
} >"$out/tools.log" 2>&1
record tools "$([[ ${#missing[@]} -eq 0 ]] && echo PASS || echo "FAIL")" 0 "$tools_note"

# ---- build ----
if [[ $simulate -eq 1 ]]; then
  build=${STRATA_CHECK_BUILD:-$root/build-gpusim-check}
  targets=(strata strata_gpusim strata_gpusim_tests strata_dump_grads strata_dump_grads_sim)
  configure=(-DSTRATA_GPUSIM=ON)
else
  build=${STRATA_CHECK_BUILD:-$root/build-gpucheck}
  targets=(strata strata_cuda_tests strata_gpusim_tests strata_gpusim strata_dump_grads strata_dump_grads_sim
           bench_gpu_kernels)
  configure=(-DSTRATA_GPUSIM=ON -DSTRATA_CUDA_ARCH=90)
  [[ -x /usr/local/cuda/bin/nvcc ]] && export CUDAToolkit_ROOT=${CUDAToolkit_ROOT:-/usr/local/cuda}
fi
build_all() {
  if [[ "${STRATA_CHECK_REUSE_BUILD:-0}" != 1 ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${configure[@]}" || return 1
  fi
  cmake --build "$build" -j "$jobs" --target "${targets[@]}"
}
if ! step build "targets: ${targets[*]}" build_all; then
  echo "check: the build failed; see $out/build.log" >&2
fi
strata=$build/strata
sim_strata=$build/tests/gpusim/strata_gpusim
sim_tests=$build/tests/gpusim/strata_gpusim_tests
gpu_tests=$build/tests/strata_cuda_tests
# The binary that runs CUDA code here: the GPU's own, or the simulator's.
if [[ $simulate -eq 1 ]]; then cuda_strata=$sim_strata; op_tests=$sim_tests; else cuda_strata=$strata; op_tests=$gpu_tests; fi

# ---- ops and model ----
model_filter='*OnCuda*'
step ops "CUDA ops vs CPU, 3 orders each" "$op_tests" --gtest_filter="-$model_filter" \
  --gtest_output="xml:$out/ops.xml"
step model "tiny GPT-2/Llama on CUDA vs CPU" "$op_tests" --gtest_filter="$model_filter" \
  --gtest_output="xml:$out/model.xml"
if [[ $simulate -eq 0 ]]; then
  step sim_beside "the same tests on the simulated GPU" "$sim_tests" --gtest_output="xml:$out/sim.xml"
fi

# ---- references ----
if [[ $simulate -eq 1 ]]; then cuda_dump=$build/tests/gpusim/strata_dump_grads_sim; else cuda_dump=$build/tests/strata_dump_grads; fi
step torch_ref "PyTorch model vs Strata's CPU and CUDA models (dense and MoE)" \
  env STRATA_DUMP_GRADS_CUDA="$cuda_dump" \
  "$root/tests/reference/torch_reference.sh" "$strata" "$root" mpirun "$build/tests/strata_dump_grads"
step hf_ref "e2e_hf_reference (transformers)" "$root/tests/e2e/hf_reference.sh" "$strata" "$root" mpirun

# ---- a short training run on the device ----
train_run() {
  local work=$out/train
  rm -rf "$work" && mkdir -p "$work"
  [[ -d "$data/brown/text" && -d "$data/gpt2" ]] || { echo "no $data/brown/text or $data/gpt2 (scripts/fetch_data.sh)"; return 1; }
  mkdir -p "$work/text" && cp "$data"/brown/text/ca0*.txt "$work/text/"
  "$strata" tokenize --input "$work/text" --output "$work/train.h5" --val-output "$work/val.h5" \
    --tokenizer "$data/gpt2" || return 1
  local steps=30 layers=4 seq=128 micro=8
  [[ $simulate -eq 1 ]] && { steps=6; layers=1; seq=16; micro=2; }
  local args=(--config "$root/configs/tiny-gpt2.yaml" --set "data.train=$work/train.h5" --set "data.val=$work/val.h5"
              --set train.precision=bf16 --set train.steps=$steps --set train.log_every=1 --set train.eval_every=0
              --set model.n_layers=$layers --set train.seq_len=$seq --set train.micro_batch=$micro
              --set train.global_batch=$((2 * micro)) --set checkpoint.every=$((steps / 2)) --set checkpoint.keep=4)
  "$cuda_strata" train "${args[@]}" --set train.device=cuda --set "train.out_dir=$work/gpu" || return 1
  # The device's checkpoint, resumed on the CPU for the second half.
  rm -rf "$work/gpu/checkpoints/step-$(printf %06d $steps)"
  cp -r "$work/gpu" "$work/cpu_resume"
  "$strata" train "${args[@]}" --set train.device=cpu --set "train.out_dir=$work/cpu_resume" --resume auto || return 1
  echo "losses on the device:"; grep -o '"loss":[0-9.eE+-]*' "$work/gpu/metrics.jsonl" | cut -d: -f2 | xargs
  echo "resumed on the CPU:";   grep -o '"loss":[0-9.eE+-]*' "$work/cpu_resume/metrics.jsonl" | cut -d: -f2 | xargs
  local first last
  first=$(grep -o '"loss":[0-9.eE+-]*' "$work/gpu/metrics.jsonl" | head -1 | cut -d: -f2)
  last=$(grep -o '"loss":[0-9.eE+-]*' "$work/cpu_resume/metrics.jsonl" | tail -1 | cut -d: -f2)
  python3 -c "import sys; sys.exit(0 if $last < $first else 1)" || { echo "the loss did not go down: $first -> $last"; return 1; }
  local ckpt=$work/cpu_resume/checkpoints/step-$(printf %06d $steps)
  "$cuda_strata" generate --checkpoint "$ckpt" --device cuda --prompt "The jury said" --max-tokens 8 \
    --tokenizer "$data/gpt2" >"$work/gen_gpu.txt" || return 1
  "$strata" generate --checkpoint "$ckpt" --device cpu --prompt "The jury said" --max-tokens 8 \
    --tokenizer "$data/gpt2" >"$work/gen_cpu.txt" || return 1
  echo "greedy on the device: $(cat "$work/gen_gpu.txt")"
  echo "greedy on the CPU:    $(cat "$work/gen_cpu.txt")"
  cmp -s "$work/gen_gpu.txt" "$work/gen_cpu.txt" || { echo "greedy texts differ"; return 1; }
  # int8 weights, and speculative decoding with the half-way checkpoint as the draft: the same
  # greedy text on both devices.
  local half=$work/cpu_resume/checkpoints/step-$(printf %06d $((steps / 2)))
  local variant name
  for variant in "--quantize int8" "--draft $half --draft-tokens 3"; do
    name=${variant%% *}; name=${name#--}
    # shellcheck disable=SC2086  # the variant is two or four words
    "$cuda_strata" generate --checkpoint "$ckpt" --device cuda --prompt "The jury said" --max-tokens 8 \
      --tokenizer "$data/gpt2" $variant >"$work/gen_gpu_$name.txt" || return 1
    # shellcheck disable=SC2086
    "$strata" generate --checkpoint "$ckpt" --device cpu --prompt "The jury said" --max-tokens 8 \
      --tokenizer "$data/gpt2" $variant >"$work/gen_cpu_$name.txt" || return 1
    echo "greedy $name on the device: $(cat "$work/gen_gpu_$name.txt")"
    echo "greedy $name on the CPU:    $(cat "$work/gen_cpu_$name.txt")"
    cmp -s "$work/gen_gpu_$name.txt" "$work/gen_cpu_$name.txt" || { echo "greedy $name texts differ"; return 1; }
  done
}
step train "tiny GPT-2 bf16 on cuda, resumed on the CPU, greedy text (plain, int8, speculative) on both" train_run

# ---- benchmark ----
if [[ $simulate -eq 0 ]]; then
  if [[ -x "$root/scripts/bench/gpu_train.sh" ]]; then
    step bench "GPT-2 124M bf16: Strata vs PyTorch" "$root/scripts/bench/gpu_train.sh" "$strata" "$out/bench"
  else
    record bench SKIP 0 "scripts/bench/gpu_train.sh is not in this checkout"
  fi
  step kernels "flash attention vs SDPA, decode vs copy bandwidth" "$root/scripts/bench/gpu_kernels.sh" \
    "$build/scripts/bench/bench_gpu_kernels" "$out/kernels"
fi

# ---- summary ----
failed=0
{
  echo "# GPU check $([[ $simulate -eq 1 ]] && echo '(simulated GPU)')"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown), $(($(date +%s) - start)) s in all"
  echo
  echo "$tools_note"
  echo
  echo "| step | result | seconds | what |"
  echo "|---|---|---|---|"
  for r in "${results[@]}"; do
    IFS='|' read -r name status secs note <<<"$r"
    [[ $status == FAIL* ]] && failed=1
    echo "| $name | $status | $secs | $note |"
  done
  echo
  for xml in ops model sim; do
    [[ -f "$out/$xml.xml" ]] || continue
    python3 - "$out/$xml.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {root.get('tests')} tests, {root.get('failures')} failed, {root.get('disabled')} disabled, {root.get('skipped', '0')} skipped, {root.get('time')} s")
for case in root.iter("testcase"):
    f = case.find("failure")
    if f is not None:
        print(f"- FAIL {case.get('classname')}.{case.get('name')}: {' '.join(f.get('message', '').split())[:240]}")
EOF
  done
  [[ -f "$out/train.log" ]] && { echo; echo '```'; grep -E "^(losses|resumed|greedy|[0-9. ]+$)" "$out/train.log"; echo '```'; }
  [[ -f "$out/bench/summary.md" ]] && { echo; cat "$out/bench/summary.md"; }
  [[ -f "$out/kernels/summary.md" ]] && { echo; cat "$out/kernels/summary.md"; }
} >"$out/summary.md"
cat "$out/summary.md"
exit $failed

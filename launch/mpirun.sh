#!/usr/bin/env bash
# Launches `strata train` (or any strata command) with as many ranks as the config's layout needs:
# dp * tp * pp * sp, read from `strata config` with the same --config and --set arguments. One rank
# per GPU where there are GPUs (each rank takes the GPU of its local rank: src/comm/launch_env.h),
# ranks bound to cores, and the CPU threads split between the ranks of a node.
#
#   launch/mpirun.sh train --config run.yaml --set parallel.dp=4 [--hosts a:8,b:8] [strata args...]
#
# Environment: STRATA (the binary; default build/strata), MPIRUN (default mpirun), HOSTS (as
# --hosts), NCCL_* passed through. Preempt with SIGUSR1 to this script's mpirun (forwarded to the
# ranks: each finishes its step, writes a checkpoint, exits 0); resume with --resume auto.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-$here/build/strata}
mpirun=${MPIRUN:-mpirun}
hosts=${HOSTS:-}
args=()
config_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --config|--set) config_args+=("$1" "$2"); args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ ${#args[@]} -gt 0 ]] || { echo "usage: launch/mpirun.sh COMMAND --config FILE [--set k=v ...] [--hosts h:n,...]" >&2; exit 2; }
[[ -x "$strata" ]] || { echo "launch/mpirun.sh: no strata binary at $strata (set STRATA)" >&2; exit 2; }
layout=$("$strata" config "${config_args[@]}")
size() { awk -v key="$1" '/^parallel:/ { p = 1; next } /^[^ ]/ { p = 0 } p && $1 == key":" { print $2 }' <<<"$layout"; }
np=$(( $(size dp) * $(size tp) * $(size pp) * $(size sp) ))
nodes=1
[[ -n "$hosts" ]] && nodes=$(tr ',' '\n' <<<"$hosts" | grep -c .)
per_node=$(( (np + nodes - 1) / nodes ))
cores=$(nproc)
threads=$(( cores / per_node > 0 ? cores / per_node : 1 ))
gpus=0
command -v nvidia-smi >/dev/null 2>&1 && gpus=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
if (( gpus > 0 && per_node > gpus )); then
  echo "launch/mpirun.sh: $per_node ranks a node but $gpus GPUs: one rank per GPU" >&2
  exit 2
fi
extra=()
[[ -n "$hosts" ]] && extra+=(--host "$hosts")
(( $(id -u) == 0 )) && extra+=(--allow-run-as-root)
(( per_node > cores )) && extra+=(--oversubscribe) || extra+=(--bind-to core --map-by "ppr:$per_node:node:pe=$threads")
echo "launch/mpirun.sh: $np ranks ($per_node a node on $nodes node(s)), $threads threads each, $gpus GPUs a node" >&2
exec "$mpirun" -np "$np" "${extra[@]}" -x OMP_NUM_THREADS="$threads" -x "NCCL_DEBUG=${NCCL_DEBUG:-WARN}" \
  "$strata" "${args[@]}"

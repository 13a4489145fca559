#!/usr/bin/env bash
# Installs every Debian package that sbpflow's build, tests, examples and
# benchmarks need, then configures and builds. Non-interactive and idempotent.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang-format
  llvm-19-dev llvm-19-tools libmlir-19-dev mlir-19-tools
  libcaf-dev
  libflatbuffers-dev flatbuffers-compiler
  libopenblas-dev
  libgloo-dev
  libgtest-dev
  zlib1g-dev
  libssl-dev
  libcli11-dev
  nlohmann-json3-dev
  dataset-fashion-mnist fortunes
  python3-torch python3-numpy
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

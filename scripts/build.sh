#!/usr/bin/env bash
# Configures and builds sbpflow into build/ (every executable in build/bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${SBPFLOW_JOBS:-2}"
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
ninja -C build -j "$jobs"

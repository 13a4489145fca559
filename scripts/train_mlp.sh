#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, and trains
# the MLP on Fashion-MNIST data-parallel over 2 local CPU ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/bin/mlp_fashion_mnist --local 2 --epochs "${EPOCHS:-10}" "$@"

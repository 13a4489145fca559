#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test
# (GoogleTest units, FileCheck tests, multi-process tests) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "${SBPFLOW_TEST_JOBS:-2}" "$@"

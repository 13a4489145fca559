#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs the GPU tests and benchmarks that
# bench/gpu/pack.sh packed beside this script, and prints a table.
#
# usage: run.sh [--json FILE]   (from the pack: gpu-pack/run.sh)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
json=""
while [[ $# -gt 0 ]]; do
  case "$1" in
  --json) json="$2"; shift 2 ;;
  -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
  *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -f "$here/sbpflow-gpu.tar.xz" ]] ||
  { echo "run.sh: no $here/sbpflow-gpu.tar.xz (run bench/gpu/pack.sh first)" >&2; exit 1; }
# Unpacked outside the pack: the pack may be read-only where it was carried.
unpacked="$(mktemp -d)"
trap 'rm -rf "$unpacked"' EXIT
tar -C "$unpacked" -xJf "$here/sbpflow-gpu.tar.xz"

# CUDA's libraries: the toolkit's if installed, else the nvidia-* wheels that
# come with PyTorch (cuBLAS, NCCL, the runtime).
cuda_dirs=$(python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os
dirs = []
for mod in ("nvidia.cublas", "nvidia.nccl", "nvidia.cuda_runtime", "nvidia.cu13"):
    try:
        spec = importlib.util.find_spec(mod)
    except ModuleNotFoundError:
        continue
    for base in (spec.submodule_search_locations or []) if spec else []:
        dirs += [d for d in glob.glob(os.path.join(base, "lib*")) if os.path.isdir(d)]
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$unpacked/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
summary=()
for t in kernels_cuda_test device_cuda_test comm_nccl_test cuda_executor_test; do
  log="$(mktemp)"
  "$unpacked/bin/$t" --gtest_color=no >"$log" 2>&1
  rc=$?
  passed=$(grep -c '^\[       OK \]' "$log")
  failed=$(grep -c '^\[  FAILED  \] .*(' "$log")
  skipped=$(grep -c '^\[  SKIPPED \] .*(' "$log")
  summary+=("| $t | $passed | $failed | $skipped |")
  if [[ $rc -ne 0 ]]; then
    status=1
    grep -B3 -A12 'Failure' "$log" | head -80
  fi
  grep -A1 'Skipped$' "$log" | grep -v -E 'Skipped$|^--' | sort | uniq -c | head -5
  rm -f "$log"
done
echo
echo "| tests | passed | failed | skipped |"
echo "|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
"$unpacked/bin/gpu_kernel_bench" ${json:+--json "$json"} || status=1
exit $status

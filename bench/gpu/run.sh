#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs what bench/gpu/pack.sh packed beside
# this script: the GPU tests, the kernel benchmark, and the char GPT trained
# from the same initial weights on the GPU, on the CPU (their fp32 losses
# must agree) and in PyTorch eager on the GPU; prints the tables.
#
# usage: run.sh [--steps N] [--json FILE]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
json=""
steps=200
while [[ $# -gt 0 ]]; do
  case "$1" in
  --steps) steps="$2"; shift 2 ;;
  --json) json="$2"; shift 2 ;;
  -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
  *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -f "$here/sbpflow-gpu.tar.xz" ]] ||
  { echo "run.sh: no $here/sbpflow-gpu.tar.xz (run bench/gpu/pack.sh first)" >&2; exit 1; }
# Unpacked outside the pack: the pack may be read-only where it was carried.
unpacked="$(mktemp -d)"
trap 'rm -rf "$unpacked"' EXIT
tar -C "$unpacked" -xJf "$here/sbpflow-gpu.tar.xz"
bin="$unpacked/bin"

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
  "$bin/$t" --gtest_color=no >"$log" 2>&1
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
"$bin/gpu_kernel_bench" ${json:+--json "$json"} || status=1

# The GPT on the GPU against the same plan on one CPU rank: fp32 losses
# must agree step by step (to 1e-4 relative: float summation order).
echo
data="$unpacked/data"
gpt() {
  "$bin/sbpflow" run "$data/gpt.plan" --local 1 --data fortunes --data-dir "$data/fortunes" \
    --resume "$data/init" --max-steps "$steps" --log-every 1 --bench-json "$unpacked/$1.json" \
    "${@:2}" >"$unpacked/$1.log" 2>&1
}
if gpt gpu --device cuda && gpt cpu --threads "$(nproc)" &&
  python3 "$data/gpt_torch.py" --checkpoint "$data/init" --data-dir "$data/fortunes" \
    --device cuda --steps "$steps" --json-out "$unpacked/torch.json" >"$unpacked/torch.log" 2>&1; then
  python3 - "$unpacked" <<'PY' || status=1
import json, sys
d = sys.argv[1]
gpu, cpu, torch = (json.load(open(f"{d}/{k}.json")) for k in ("gpu", "cpu", "torch"))
worst = max(abs(a - b) / abs(b) for a, b in zip(gpu["losses"], cpu["losses"]))
print("| GPT (char, fp32, batch 12) | step | final loss |\n|---|---|---|")
print(f"| sbpflow, GPU | {gpu['step_ms']:.2f} ms | {gpu['final_loss']:.6f} |")
print(f"| sbpflow, CPU ({cpu['threads']} threads) | {cpu['step_ms']:.2f} ms | {cpu['final_loss']:.6f} |")
print(f"| PyTorch {torch['torch_version']} eager, GPU | {torch['step_ms']:.2f} ms | "
      f"{torch['final_loss']:.6f} |")
print(f"sbpflow GPU / PyTorch eager GPU step time: {gpu['step_ms'] / torch['step_ms']:.3f}")
print(f"largest relative loss difference GPU vs CPU over {len(gpu['losses'])} steps: {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
PY
else
  status=1
  for run in gpu cpu torch; do
    if [[ -s "$unpacked/$run.log" ]]; then
      echo "== the GPT's $run run failed or was not compared; its log ends:"
      tail -n 5 "$unpacked/$run.log"
    fi
  done
fi
exit $status

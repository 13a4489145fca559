#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs what bench/gpu/pack.sh packed beside
# this script: the GPU tests, the kernel benchmark, the char GPT trained from
# the same initial weights on the GPU, on the CPU (their fp32 losses must
# agree), in mixed precision on the GPU (within 1% of fp32) and in PyTorch
# eager on the GPU; then a GPT-2-small-shaped model in both precisions beside
# PyTorch eager (autocast for bf16), with the model FLOP utilisation against
# the bf16 GEMM peak measured here. Prints the tables.
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
"$bin/gpu_kernel_bench" --json "$unpacked/kernels.json" || status=1
[[ -n "$json" && -f "$unpacked/kernels.json" ]] && cp "$unpacked/kernels.json" "$json"

# The char GPT on the GPU against the same plan on one CPU rank: fp32 losses
# must agree step by step (to 1e-4 relative: float summation order); the
# mixed-precision plan must stay within 1% of the fp32 losses.
echo
data="$unpacked/data"
gpt() { # name plan [run options]
  "$bin/sbpflow" run "$data/$2" --local 1 --data fortunes --data-dir "$data/fortunes" \
    --log-every 1 --bench-json "$unpacked/$1.json" "${@:3}" >"$unpacked/$1.log" 2>&1
}
torch_gpt() { # name [gpt_torch.py options]
  python3 "$data/gpt_torch.py" --data-dir "$data/fortunes" --device cuda \
    --json-out "$unpacked/$1.json" "${@:2}" >"$unpacked/$1.log" 2>&1
}
char=(--resume "$data/init" --max-steps "$steps")
if gpt gpu gpt-cuda.plan --device cuda "${char[@]}" && gpt cpu gpt.plan --threads "$(nproc)" "${char[@]}" &&
  gpt gpu-bf16 gpt-bf16.plan --device cuda "${char[@]}" &&
  torch_gpt torch --checkpoint "$data/init" --steps "$steps" &&
  torch_gpt torch-bf16 --checkpoint "$data/init" --steps "$steps" --bf16; then
  python3 - "$unpacked" <<'PY' || status=1
import json, sys
d = sys.argv[1]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ("gpu", "cpu", "gpu-bf16", "torch", "torch-bf16")}
def worst(a, b):
    return max(abs(x - y) / abs(y) for x, y in zip(r[a]["losses"], r[b]["losses"]))
print("| GPT (char, batch 12) | step | final loss |\n|---|---|---|")
print(f"| sbpflow fp32, GPU | {r['gpu']['step_ms']:.2f} ms | {r['gpu']['final_loss']:.6f} |")
print(f"| sbpflow fp32, CPU ({r['cpu']['threads']} threads) | {r['cpu']['step_ms']:.2f} ms | "
      f"{r['cpu']['final_loss']:.6f} |")
print(f"| sbpflow bf16, GPU | {r['gpu-bf16']['step_ms']:.2f} ms | {r['gpu-bf16']['final_loss']:.6f} |")
for k, what in (("torch", "fp32"), ("torch-bf16", "autocast bf16")):
    print(f"| PyTorch {r[k]['torch_version']} eager {what}, GPU | {r[k]['step_ms']:.2f} ms | "
          f"{r[k]['final_loss']:.6f} |")
print(f"sbpflow / PyTorch eager step time: fp32 {r['gpu']['step_ms'] / r['torch']['step_ms']:.3f}, "
      f"bf16 {r['gpu-bf16']['step_ms'] / r['torch-bf16']['step_ms']:.3f}")
fp32, bf16 = worst("gpu", "cpu"), worst("gpu-bf16", "gpu")
print(f"largest relative loss difference over {len(r['gpu']['losses'])} steps: "
      f"GPU vs CPU fp32 {fp32:.2e} (limit 1e-4), bf16 vs fp32 {bf16:.2e} (limit 1e-2)")
sys.exit(0 if fp32 <= 1e-4 and bf16 <= 1e-2 else 1)
PY
else
  status=1
  for run in gpu cpu gpu-bf16 torch torch-bf16; do
    if [[ -s "$unpacked/$run.log" ]]; then
      echo "== the char GPT's $run run failed or was not compared; its log ends:"
      tail -n 5 "$unpacked/$run.log"
    fi
  done
fi

# Throughput: a GPT-2-small-shaped model (12 x 768, context 1024, batch 8,
# its own random initialisation on both sides). MFU = model FLOPs per step
# (6 N per token for the N non-embedding weights' products, plus 12 L T C per
# token for attention's scores and weighted sums, forward and backward) over
# the step time and the bf16 GEMM peak gpu_kernel_bench measured.
echo
big=(--max-steps 30)
tbig=(--steps 30 --warmup 10 --batch 8 --n-layer 12 --n-head 12 --n-embd 768 --block-size 1024)
if gpt big gpt2s.plan --device cuda "${big[@]}" && gpt big-bf16 gpt2s-bf16.plan --device cuda "${big[@]}" &&
  torch_gpt torch-big "${tbig[@]}" && torch_gpt torch-big-bf16 "${tbig[@]}" --bf16; then
  python3 - "$unpacked" <<'PY' || status=1
import json, sys
d = sys.argv[1]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ("big", "big-bf16", "torch-big", "torch-big-bf16")}
peak = next(row["rate"] for row in json.load(open(f"{d}/kernels.json"))["rows"]
            if row["kernel"].startswith("bf16 GEMM (peak)"))
L, C, T, B = 12, 768, 1024, 8
n = 12 * L * C * C  # the blocks' weight matrices (q, k, v, proj: 4 C^2; MLP: 8 C^2)
flops = B * T * (6 * n + 12 * L * T * C)
print(f"| GPT-2-small shape (12 x 768, T 1024, batch 8) | step | model TFLOP/s | MFU (bf16 GEMM peak "
      f"{peak / 1e12:.0f} TFLOP/s) |\n|---|---|---|---|")
rows = (("big", "sbpflow fp32"), ("big-bf16", "sbpflow bf16"),
        ("torch-big", f"PyTorch {r['torch-big']['torch_version']} eager fp32"),
        ("torch-big-bf16", "PyTorch eager autocast bf16"))
for k, what in rows:
    s = r[k]["step_ms"] / 1e3
    print(f"| {what} | {s * 1e3:.1f} ms | {flops / s / 1e12:.1f} | {100 * flops / s / peak:.1f}% |")
print(f"sbpflow / PyTorch eager step time: fp32 {r['big']['step_ms'] / r['torch-big']['step_ms']:.3f}, "
      f"bf16 {r['big-bf16']['step_ms'] / r['torch-big-bf16']['step_ms']:.3f}")
PY
else
  status=1
  for run in big big-bf16 torch-big torch-big-bf16; do
    if [[ -s "$unpacked/$run.log" ]]; then
      echo "== the GPT-2-small-shaped $run run failed; its log ends:"
      tail -n 5 "$unpacked/$run.log"
    fi
  done
fi
exit $status

#!/usr/bin/env bash
# Packs what a bare machine with an NVIDIA GPU needs to test and benchmark
# sbpflow there, into gpu-pack/ (a ~15 MB .tar.xz beside run.sh, small enough
# to carry): the GPU tests, gpu_kernel_bench, sbpflow and sbpflow-worker from
# a runtime-only build (no LLVM/MLIR; CUDA for sm_80 and sm_90), the shared
# libraries such a machine lacks (OpenBLAS, Gloo, CAF and theirs), the GPT's
# plan compiled here and the fortunes text it trains on. CUDA's own libraries
# (cudart, cuBLAS, NCCL) are not packed: run.sh takes the GPU machine's.
#
# usage: bench/gpu/pack.sh [--build DIR] [--runtime-build DIR] [--out DIR]
#   --build: the full build here (compiles the plan; default build/)
#   --runtime-build: the runtime-only CUDA build (default build-gpu/)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(realpath "$here/../..")"
build="$root/build"
runtime="$root/build-gpu"
out="$root/gpu-pack"
while [[ $# -gt 0 ]]; do
  case "$1" in
  --build) build="$(realpath -m "$2")"; shift 2 ;;
  --runtime-build) runtime="$(realpath -m "$2")"; shift 2 ;;
  --out) out="$(realpath -m "$2")"; shift 2 ;;
  -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "pack.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
jobs="${SBPFLOW_JOBS:-2}"

[[ -x "$build/bin/gpt_char" ]] ||
  { echo "pack.sh: $build/bin/gpt_char not built (scripts/build.sh)" >&2; exit 1; }
targets=(sbpflow sbpflow-worker kernels_cuda_test device_cuda_test comm_nccl_test
         cuda_executor_test gpu_kernel_bench)
if [[ ! -f "$runtime/build.ninja" ]]; then
  cmake -S "$root" -B "$runtime" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSBPFLOW_BUILD_COMPILER=OFF -DSBPFLOW_CUDA=ON
fi
ninja -C "$runtime" -j "$jobs" "${targets[@]}"

rm -rf "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out" "$stage/bin" "$stage/lib" "$stage/data"
for t in "${targets[@]}"; do
  cp "$runtime/bin/$t" "$stage/bin/"
  strip "$stage/bin/$t"
  # Everything the binary links except the C/C++ runtime (the GPU machine's
  # are newer, hence compatible) and CUDA's libraries.
  ldd "$runtime/bin/$t" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libstdc++.so* | libgcc_s.so*) ;;
    libcudart.so* | libcublas.so* | libcublasLt.so* | libnccl.so* | libcuda.so*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
done
# The char GPT (examples/gpt_char.cpp's configuration, one rank) in fp32 and
# mixed precision, its initial weights, a GPT-2-small-shaped one (12 layers,
# 12 heads, width 768, context 1024, batch 8) in both precisions for the
# throughput table, the text, and the PyTorch peer (bench/gpt_torch.py).
# A plan runs on the devices its placements name: gpt.plan is the CPU
# reference, the others are compiled for the GPU (--device cuda).
"$build/bin/gpt_char" --emit-plan "$stage/data/gpt.plan" --plan-only >/dev/null
"$build/bin/gpt_char" --device cuda --emit-plan "$stage/data/gpt-cuda.plan" --plan-only >/dev/null
"$build/bin/gpt_char" --device cuda --bf16 --emit-plan "$stage/data/gpt-bf16.plan" --plan-only \
  >/dev/null
"$build/bin/gpt_char" --init-checkpoint "$stage/data/init" >/dev/null
gpt2s=(--device cuda --n-layer 12 --n-head 12 --n-embd 768 --block-size 1024 --batch 8 --dropout 0)
"$build/bin/gpt_char" "${gpt2s[@]}" --emit-plan "$stage/data/gpt2s.plan" --plan-only >/dev/null
"$build/bin/gpt_char" "${gpt2s[@]}" --bf16 --emit-plan "$stage/data/gpt2s-bf16.plan" \
  --plan-only >/dev/null
cp -r /usr/share/games/fortunes "$stage/data/fortunes"
cp "$root/bench/gpt_torch.py" "$root/bench/fortunes_batches.py" "$stage/data/"
tar -C "$stage" -cJf "$out/sbpflow-gpu.tar.xz" bin lib data
cp "$here/run.sh" "$out/"
du -sh "$out"
echo "packed $out: carry it to the GPU machine and run its run.sh there" >&2

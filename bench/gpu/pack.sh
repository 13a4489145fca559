#!/usr/bin/env bash
# Builds the GPU tests and benchmarks here (nvcc, sm_80 and sm_90) and packs
# them with the shared libraries a bare GPU machine lacks (OpenBLAS, Gloo,
# CAF and theirs) into gpu-pack/ (one .tar.xz of about 10 MB beside run.sh,
# small enough to carry), for run.sh on a machine with an NVIDIA GPU. CUDA's own libraries (cudart, cuBLAS, NCCL) are not packed: run.sh
# takes the GPU machine's, which match its driver.
#
# usage: bench/gpu/pack.sh [--build DIR] [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(realpath "$here/../..")"
build="$root/build"
out="$root/gpu-pack"
while [[ $# -gt 0 ]]; do
  case "$1" in
  --build) build="$(realpath -m "$2")"; shift 2 ;;
  --out) out="$(realpath -m "$2")"; shift 2 ;;
  -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "pack.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

targets=(kernels_cuda_test device_cuda_test comm_nccl_test cuda_executor_test gpu_kernel_bench)
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSBPFLOW_CUDA=ON
fi
ninja -C "$build" -t targets all | grep -q '^gpu_kernel_bench:' ||
  { echo "pack.sh: $build was configured without CUDA (nvcc not found?)" >&2; exit 1; }
ninja -C "$build" -j "${SBPFLOW_JOBS:-2}" "${targets[@]}"

rm -rf "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out" "$stage/bin" "$stage/lib"
for t in "${targets[@]}"; do
  cp "$build/bin/$t" "$stage/bin/"
  strip "$stage/bin/$t"
  # Everything the binary links except the C/C++ runtime (the GPU machine's
  # are newer, hence compatible) and CUDA's libraries.
  ldd "$build/bin/$t" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libstdc++.so* | libgcc_s.so*) ;;
    libcudart.so* | libcublas.so* | libcublasLt.so* | libnccl.so* | libcuda.so*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
done
tar -C "$stage" -cJf "$out/sbpflow-gpu.tar.xz" bin lib
cp "$here/run.sh" "$out/"
du -sh "$out"
echo "packed $out: carry it to the GPU machine and run $out/run.sh there" >&2

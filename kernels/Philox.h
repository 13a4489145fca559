// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as
// easy as 1, 2, 3", SC'11), the counter-based generator of cuRAND and JAX:
// one definition for the CPU and the CUDA kernels, so that a dropout mask is
// the same bits on either.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define SBPFLOW_PHILOX_INLINE __host__ __device__ __forceinline__
#else
// Inlined into the CPU kernels' target_clones loops, where it vectorises
// (the multiplications become vpmuludq).
#define SBPFLOW_PHILOX_INLINE inline __attribute__((always_inline))
#endif

namespace sbpflow {

struct PhiloxBlock {
  uint32_t word[4];
};

// Ten rounds of two 32x32->64 multiplications and xors with the key, which
// advances by the Weyl constants between rounds.
SBPFLOW_PHILOX_INLINE PhiloxBlock philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                uint32_t k0, uint32_t k1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

} // namespace sbpflow

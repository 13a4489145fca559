// How the CPU kernels ask GCC to vectorise their hot loops.
#pragma once

// Elementwise outputs may alias an input exactly (memory planning reuses a
// dying operand's bytes in place), never partially: `ivdep` lets GCC
// vectorise these loops instead of falling back to a scalar loop with an
// unpredictable branch when its runtime overlap check sees the exact alias
// (10x slower).
#define SBPFLOW_ELEMENTWISE _Pragma("GCC ivdep")

// The build targets baseline x86-64 (SSE2, no FMA), PyTorch dispatches to
// AVX2 / AVX-512 at run time: the hot kernels are compiled three times and the
// loader picks the best one the CPU runs (GCC's function multi-versioning).
// Defining SBPFLOW_CLONES empty builds one version for -march, to test each.
#if !defined(SBPFLOW_CLONES) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SBPFLOW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif !defined(SBPFLOW_CLONES)
#define SBPFLOW_CLONES
#endif

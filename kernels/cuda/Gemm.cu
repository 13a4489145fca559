// cuBLASLt matmul (see Gemm.h). A row-major [r, c] matrix is a column-major
// [c, r] one with the same leading dimension, so row-major C = op(A) op(B) is
// column-major Cᵀ = op(B)ᵀ op(A)ᵀ: cuBLAS gets b as its first operand and a as
// its second, each with its own transpose flag, and computes an [n, m] result.
#include "kernels/cuda/Gemm.h"

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace sbpflow::cuda {
namespace {

const char *cublasStatusName(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS:
    return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_NOT_INITIALIZED:
    return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED:
    return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE:
    return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_ARCH_MISMATCH:
    return "CUBLAS_STATUS_ARCH_MISMATCH";
  case CUBLAS_STATUS_MAPPING_ERROR:
    return "CUBLAS_STATUS_MAPPING_ERROR";
  case CUBLAS_STATUS_EXECUTION_FAILED:
    return "CUBLAS_STATUS_EXECUTION_FAILED";
  case CUBLAS_STATUS_INTERNAL_ERROR:
    return "CUBLAS_STATUS_INTERNAL_ERROR";
  case CUBLAS_STATUS_NOT_SUPPORTED:
    return "CUBLAS_STATUS_NOT_SUPPORTED";
  case CUBLAS_STATUS_LICENSE_ERROR:
    return "CUBLAS_STATUS_LICENSE_ERROR";
  default:
    return "unknown cublasStatus_t";
  }
}

Status cublasError(const char *call, cublasStatus_t s) {
  return Status::error(std::string("cuBLASLt ") + call + ": " + cublasStatusName(s) + " (" +
                       std::to_string(static_cast<int>(s)) + ")");
}

#define SBPFLOW_CUBLAS(call)                                                                       \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                               \
      return cublasError(#call, s_);                                                               \
  } while (0)

// The alignment cuBLASLt may assume of a pointer: its largest power-of-two
// divisor, up to the 256 bytes the heuristic assumes by default. A buffer at
// an offset inside the plan's memory may be less aligned than that.
uint32_t alignmentOf(const void *p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lowest = addr & (~addr + 1);
  return lowest == 0 || lowest >= 256 ? 256u : static_cast<uint32_t>(lowest);
}

// The descriptors and algorithm of one problem (type, shape, flags and
// pointer alignments).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan &) = delete;
  Plan &operator=(const Plan &) = delete;
  Plan(Plan &&o) noexcept { *this = std::move(o); }
  Plan &operator=(Plan &&o) noexcept {
    std::swap(desc, o.desc);
    std::swap(a, o.a);
    std::swap(b, o.b);
    std::swap(c, o.c);
    std::swap(algo, o.algo);
    return *this;
  }
  ~Plan() {
    if (c)
      cublasLtMatrixLayoutDestroy(c);
    if (b)
      cublasLtMatrixLayoutDestroy(b);
    if (a)
      cublasLtMatrixLayoutDestroy(a);
    if (desc)
      cublasLtMatmulDescDestroy(desc);
  }
};

cudaDataType_t cudaTypeOf(GemmType t) { return t == GemmType::Bf16 ? CUDA_R_16BF : CUDA_R_32F; }
const char *nameOf(GemmType t) { return t == GemmType::Bf16 ? "bf16" : "fp32"; }
size_t bytesOf(GemmType t) { return t == GemmType::Bf16 ? 2 : 4; }

// The operand type, the result type, m, n, k, transA, transB, and the
// alignments of a, b, c.
using PlanKey = std::tuple<GemmType, GemmType, int64_t, int64_t, int64_t, bool, bool, uint32_t,
                           uint32_t, uint32_t>;

} // namespace

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void *workspace = nullptr;
  size_t workspaceBytes = 0;
  std::mutex mutex; // guards plans
  std::map<PlanKey, Plan> plans;

  ~Impl() {
    plans.clear(); // descriptors before the handle
    if (workspace)
      cudaFree(workspace);
    if (handle)
      cublasLtDestroy(handle);
  }

  Status makePlan(const PlanKey &key, Plan &plan) {
    const auto [type, resultType, m, n, k, transA, transB, alignA, alignB, alignC] = key;
    const cudaDataType_t dtype = cudaTypeOf(type), ctype = cudaTypeOf(resultType);
    // CUBLAS_COMPUTE_32F, not _FAST_TF32: fp32 products must stay fp32. With
    // bf16 operands it is the fp32 accumulator, whatever C's type (a bf16 C
    // rounds once, at the end). Alpha and beta are fp32 (CUDA_R_32F).
    SBPFLOW_CUBLAS(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // cuBLAS's first operand is b (see the file comment).
    const cublasOperation_t opFirst = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opSecond = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    SBPFLOW_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opFirst,
                                                  sizeof(opFirst)));
    SBPFLOW_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opSecond,
                                                  sizeof(opSecond)));
    // Layouts describe the stored matrices, column-major: row-major b [k, n]
    // is column-major [n, k] with leading dimension n, and so on.
    const uint64_t bRows = transB ? k : n, bCols = transB ? n : k;
    const uint64_t aRows = transA ? m : k, aCols = transA ? k : m;
    SBPFLOW_CUBLAS(
        cublasLtMatrixLayoutCreate(&plan.b, dtype, bRows, bCols, static_cast<int64_t>(bRows)));
    SBPFLOW_CUBLAS(
        cublasLtMatrixLayoutCreate(&plan.a, dtype, aRows, aCols, static_cast<int64_t>(aRows)));
    // C and D share this layout (and type): cublasLtMatmul writes D = C in place.
    SBPFLOW_CUBLAS(cublasLtMatrixLayoutCreate(&plan.c, ctype, static_cast<uint64_t>(n),
                                              static_cast<uint64_t>(m), n));

    cublasLtMatmulPreference_t pref = nullptr;
    SBPFLOW_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t maxWorkspace = workspaceBytes;
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &maxWorkspace, sizeof(maxWorkspace));
    // The first operand (cuBLAS's A) is our b, the second (cuBLAS's B) our a.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignB},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignA},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignC},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignC}};
    for (const auto &[attr, value] : aligns)
      if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.b, plan.a, plan.c, plan.c, pref, 1,
                                         &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS)
      return cublasError("cublasLtMatmulAlgoGetHeuristic", s);
    if (found == 0)
      return Status::error("cuBLASLt: no algorithm for a " + std::string(nameOf(type)) + " x " +
                           nameOf(type) + " -> " + nameOf(resultType) + " matmul [" +
                           std::to_string(m) + "," + std::to_string(k) + "] x [" +
                           std::to_string(k) + "," + std::to_string(n) + "]");
    plan.algo = result.algo;
    return Status::ok();
  }
};

Blas::Blas(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Blas::Blas(Blas &&) noexcept = default;
Blas &Blas::operator=(Blas &&) noexcept = default;
Blas::~Blas() = default;

StatusOr<Blas> Blas::create(size_t workspaceBytes) {
  auto impl = std::make_unique<Impl>();
  if (cublasStatus_t s = cublasLtCreate(&impl->handle); s != CUBLAS_STATUS_SUCCESS)
    return cublasError("cublasLtCreate", s);
  if (workspaceBytes > 0) {
    if (cudaError_t e = cudaMalloc(&impl->workspace, workspaceBytes); e != cudaSuccess)
      return Status::error("cuBLASLt workspace of " + std::to_string(workspaceBytes) +
                           " bytes: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
    impl->workspaceBytes = workspaceBytes;
  }
  return Blas(std::move(impl));
}

Status Blas::run(GemmType type, GemmType result, const void *a, const void *b, void *c, int64_t m,
                 int64_t n, int64_t k, bool transA, bool transB, cudaStream_t stream) {
  if (type == GemmType::F32 && result != GemmType::F32)
    return Status::error("matmul: fp32 operands need an fp32 result, not " +
                         std::string(nameOf(result)));
  if (m < 0 || n < 0 || k < 0)
    return Status::error("matmul: negative size [" + std::to_string(m) + "," + std::to_string(k) +
                         "] x [" + std::to_string(k) + "," + std::to_string(n) + "]");
  if (m == 0 || n == 0)
    return Status::ok();
  if (k == 0) {
    // cuBLAS rejects a zero leading dimension; an empty sum is zero (all-zero
    // bits, in fp32 and bf16 alike).
    const size_t bytes = static_cast<size_t>(m * n) * bytesOf(result);
    if (cudaError_t e = cudaMemsetAsync(c, 0, bytes, stream); e != cudaSuccess)
      return Status::error(std::string("matmul with k = 0: cudaMemsetAsync: ") +
                           cudaGetErrorName(e));
    return Status::ok();
  }
  const PlanKey key = std::make_tuple(type, result, m, n, k, transA, transB, alignmentOf(a),
                                      alignmentOf(b), alignmentOf(c));
  const Plan *plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    auto it = impl_->plans.find(key);
    if (it == impl_->plans.end()) {
      Plan fresh;
      if (Status s = impl_->makePlan(key, fresh); !s)
        return s; // `fresh` frees what was created
      it = impl_->plans.emplace(key, std::move(fresh)).first;
    }
    plan = &it->second; // std::map nodes stay put; plans are never erased
  }
  const float alpha = 1.f, beta = 0.f;
  SBPFLOW_CUBLAS(cublasLtMatmul(impl_->handle, plan->desc, &alpha, b, plan->b, a, plan->a, &beta, c,
                                plan->c, c, plan->c, &plan->algo, impl_->workspace,
                                impl_->workspaceBytes, stream));
  return Status::ok();
}

template <class T>
Status matmul(Blas &blas, const T *a, const T *b, T *c, int64_t m, int64_t n, int64_t k,
              bool transA, bool transB, cudaStream_t stream) {
  constexpr GemmType type = std::is_same_v<T, bf16> ? GemmType::Bf16 : GemmType::F32;
  return blas.run(type, a, b, c, m, n, k, transA, transB, stream);
}

Status matmul(Blas &blas, const bf16 *a, const bf16 *b, float *c, int64_t m, int64_t n, int64_t k,
              bool transA, bool transB, cudaStream_t stream) {
  return blas.run(GemmType::Bf16, GemmType::F32, a, b, c, m, n, k, transA, transB, stream);
}

template Status matmul<float>(Blas &, const float *, const float *, float *, int64_t, int64_t,
                              int64_t, bool, bool, cudaStream_t);
template Status matmul<bf16>(Blas &, const bf16 *, const bf16 *, bf16 *, int64_t, int64_t, int64_t,
                             bool, bool, cudaStream_t);

} // namespace sbpflow::cuda

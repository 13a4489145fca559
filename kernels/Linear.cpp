// Linear layers at runtime: matmul (operands of any rank read as matrices
// [product of leading axes, last]), bias add, the fused bias + GELU and the
// bias gradient (reduce_rows). CPU: OpenBLAS and loops in f32; CUDA:
// cuBLASLt and own kernels in the task's element type.
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Loss.h"
#endif

namespace sbpflow::ops {
namespace {

// c[m, n] = op(a)[m, k] * op(b)[k, n].
struct MatMulWork {
  int64_t m = 0, n = 0, k = 0;
  bool transA = false, transB = false;
};

StatusOr<MatMulWork> matMulWork(const OpArgs &a) {
  MatMulWork w;
  if (auto *attrs = a.task.attrs_as_MatMulAttrs()) {
    w.transA = attrs->transpose_a();
    w.transB = attrs->transpose_b();
  }
  int64_t aRows = 0, aCols = 0, bRows = 0, bCols = 0;
  if (Status s = rowsOf(a.in[0], aRows, aCols, a.at); !s)
    return s;
  if (Status s = rowsOf(a.in[1], bRows, bCols, a.at); !s)
    return s;
  if (a.in[0]->local.size() < 2 || a.in[1]->local.size() < 2)
    return Status::error(a.at + ": matmul operands need at least two axes");
  w.m = w.transA ? aCols : aRows;
  w.k = w.transA ? aRows : aCols;
  const int64_t k2 = w.transB ? bCols : bRows;
  w.n = w.transB ? bRows : bCols;
  if (w.k != k2 || elements(a.out[0]) != w.m * w.n)
    return Status::error(a.at + ": local shapes do not multiply ([" + std::to_string(w.m) + "x" +
                         std::to_string(w.k) + "] x [" + std::to_string(k2) + "x" +
                         std::to_string(w.n) + "] into " + toString(a.out[0]->local) + ")");
  return w;
}

// A tensor as rows of `cols` elements.
struct RowsWork {
  int64_t rows = 0, cols = 0;
};

// BiasAdd: x is [rows, bias size].
StatusOr<RowsWork> biasWork(const OpArgs &a) {
  RowsWork w;
  w.cols = elements(a.in[1]);
  w.rows = w.cols ? elements(a.in[0]) / w.cols : 0;
  if (w.rows * w.cols != elements(a.in[0]) || elements(a.out[0]) != elements(a.in[0]))
    return Status::error(a.at + ": bias " + toString(a.in[1]->local) +
                         " does not cover the trailing axes of " + toString(a.in[0]->local));
  return w;
}

// BiasGelu: x and bias as BiasAdd's, into out0 (x + bias); out1 (its GELU)
// has out0's shape.
StatusOr<RowsWork> biasGeluWork(const OpArgs &a) {
  if (a.out.size() != 2)
    return Status::error(a.at + ": expects 2 outputs (x + bias and its GELU), has " +
                         std::to_string(a.out.size()));
  auto w = biasWork(a);
  if (w && a.out[1]->local != a.out[0]->local)
    return Status::error(a.at + ": GELU output " + toString(a.out[1]->local) +
                         " differs in shape from the pre-activation " + toString(a.out[0]->local));
  return w;
}

// ReduceRows: the output is one row.
StatusOr<RowsWork> reduceRowsWork(const OpArgs &a) {
  RowsWork w;
  w.cols = elements(a.out[0]);
  w.rows = w.cols ? elements(a.in[0]) / w.cols : 0;
  if (w.rows * w.cols != elements(a.in[0]))
    return Status::error(a.at + ": input size is not a multiple of the output size");
  return w;
}

} // namespace

Status checkMatMul(const OpArgs &a) { return statusOf(matMulWork(a)); }
Status checkBiasAdd(const OpArgs &a) { return statusOf(biasWork(a)); }
Status checkBiasGelu(const OpArgs &a) { return statusOf(biasGeluWork(a)); }
Status checkReduceRows(const OpArgs &a) { return statusOf(reduceRowsWork(a)); }

StatusOr<Kernel> cpuMatMul(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = matMulWork(a);
    if (!w)
      return w.status();
    const float *x = data<float>(a.in[0]), *y = data<float>(a.in[1]);
    float *c = data<float>(a.out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::matmul(x, y, c, w.m, w.n, w.k, w.transA, w.transB);
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuBiasAdd(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = biasWork(a);
    if (!w)
      return w.status();
    const float *x = data<float>(a.in[0]), *b = data<float>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::biasAdd(x, b, y, w.rows, w.cols);
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuBiasGelu(const OpArgs &args) {
  // Unfused, a BF16 pre is rounded when BiasAdd stores it and Gelu reads the
  // rounded value: so must the fused kernel, to give the same y.
  const bool preBf16 = args.out.size() == 2 && args.out[0]->dtype == plan::DType::BF16;
  return withF32(args, [preBf16](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = biasGeluWork(a);
    if (!w)
      return w.status();
    const float *x = data<float>(a.in[0]), *b = data<float>(a.in[1]);
    float *pre = data<float>(a.out[0]), *y = data<float>(a.out[1]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::biasGelu(x, b, pre, y, w.rows, w.cols, preBf16);
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuReduceRows(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = reduceRowsWork(a);
    if (!w)
      return w.status();
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::reduceRows(x, y, w.rows, w.cols);
      return Status::ok();
    });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

StatusOr<Kernel> cudaMatMul(const OpArgs &a) {
  auto w = matMulWork(a);
  if (!w)
    return w.status();
  CudaResources *res = a.cuda;
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *y = data<T>(a.in[1]);
    // The result is T, or F32: a bf16 product kept in its fp32 accumulator
    // (a weight gradient), through matmul's mixed overload.
    if (a.out[0]->dtype == plan::DType::F32) {
      float *c = data<float>(a.out[0]);
      return Kernel([=, w = *w, at = a.at](const StepContext &) {
        return named(at, cuda::matmul(res->blas, x, y, c, w.m, w.n, w.k, w.transA, w.transB, s));
      });
    }
    T *c = data<T>(a.out[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::matmul(res->blas, x, y, c, w.m, w.n, w.k, w.transA, w.transB, s));
    });
  });
}

StatusOr<Kernel> cudaBiasAdd(const OpArgs &a) {
  auto w = biasWork(a);
  if (!w)
    return w.status();
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *b = data<T>(a.in[1]);
    T *y = data<T>(a.out[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::biasAdd<T>(x, b, y, w.rows, w.cols, s));
    });
  });
}

StatusOr<Kernel> cudaBiasGelu(const OpArgs &a) {
  auto w = biasGeluWork(a);
  if (!w)
    return w.status();
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *b = data<T>(a.in[1]);
    T *pre = data<T>(a.out[0]), *y = data<T>(a.out[1]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::biasGelu<T>(x, b, pre, y, w.rows, w.cols, s));
    });
  });
}

StatusOr<Kernel> cudaReduceRows(const OpArgs &a) {
  auto w = reduceRowsWork(a);
  if (!w)
    return w.status();
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]);
    // The sum is F32 (a bias gradient for the fp32 optimiser) or T; it is
    // accumulated in fp32 either way and rounded once.
    if (a.out[0]->dtype == plan::DType::F32) {
      float *y = data<float>(a.out[0]);
      return Kernel([=, w = *w, at = a.at](const StepContext &) {
        return named(at, cuda::reduceRows<T, float>(x, y, w.rows, w.cols, s));
      });
    }
    T *y = data<T>(a.out[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::reduceRows<T, T>(x, y, w.rows, w.cols, s));
    });
  });
}

#endif

} // namespace sbpflow::ops

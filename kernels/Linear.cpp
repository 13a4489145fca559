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

#include <type_traits>
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
  return checkedF32(args, matMulWork, [](const OpArgs &a, MatMulWork w) {
    const float *x = data<float>(a.in[0]), *y = data<float>(a.in[1]);
    float *c = data<float>(a.out[0]);
    return always([=] { cpu::matmul(x, y, c, w.m, w.n, w.k, w.transA, w.transB); });
  });
}

StatusOr<Kernel> cpuBiasAdd(const OpArgs &args) {
  return checkedF32(args, biasWork, [](const OpArgs &a, RowsWork w) {
    const float *x = data<float>(a.in[0]), *b = data<float>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::biasAdd(x, b, y, w.rows, w.cols); });
  });
}

StatusOr<Kernel> cpuBiasGelu(const OpArgs &args) {
  // Unfused, a BF16 pre is rounded when BiasAdd stores it and Gelu reads the
  // rounded value: so must the fused kernel, to give the same y.
  const bool preBf16 = args.out.size() == 2 && args.out[0]->dtype == plan::DType::BF16;
  return checkedF32(args, biasGeluWork, [preBf16](const OpArgs &a, RowsWork w) {
    const float *x = data<float>(a.in[0]), *b = data<float>(a.in[1]);
    float *pre = data<float>(a.out[0]), *y = data<float>(a.out[1]);
    return always([=] { cpu::biasGelu(x, b, pre, y, w.rows, w.cols, preBf16); });
  });
}

StatusOr<Kernel> cpuReduceRows(const OpArgs &args) {
  return checkedF32(args, reduceRowsWork, [](const OpArgs &a, RowsWork w) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::reduceRows(x, y, w.rows, w.cols); });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

// The result of a matmul or reduce_rows is T, or F32: a bf16 product or sum
// kept in its fp32 accumulator (a weight or bias gradient for the fp32
// optimiser), rounded never.
template <class T, class Run> Kernel toAccumulator(const OpArgs &a, Run run) {
  if (a.out[0]->dtype == plan::DType::F32)
    return launch(a, [run, y = data<float>(a.out[0])] { return run(y); });
  return launch(a, [run, y = data<T>(a.out[0])] { return run(y); });
}

StatusOr<Kernel> cudaMatMul(const OpArgs &a) {
  CudaResources *res = a.cuda;
  return cuda::typedKernel(a, matMulWork, [&](auto e, MatMulWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *y = data<T>(a.in[1]);
    return toAccumulator<T>(a, [=](auto *c) {
      return cuda::matmul(res->blas, x, y, c, w.m, w.n, w.k, w.transA, w.transB, s);
    });
  });
}

StatusOr<Kernel> cudaBiasAdd(const OpArgs &a) {
  return cuda::typedKernel(a, biasWork, [&](auto e, RowsWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *b = data<T>(a.in[1]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] { return cuda::biasAdd<T>(x, b, y, w.rows, w.cols, s); });
  });
}

StatusOr<Kernel> cudaBiasGelu(const OpArgs &a) {
  return cuda::typedKernel(a, biasGeluWork, [&](auto e, RowsWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *b = data<T>(a.in[1]);
    T *pre = data<T>(a.out[0]), *y = data<T>(a.out[1]);
    return launch(a, [=] { return cuda::biasGelu<T>(x, b, pre, y, w.rows, w.cols, s); });
  });
}

StatusOr<Kernel> cudaReduceRows(const OpArgs &a) {
  return cuda::typedKernel(a, reduceRowsWork, [&](auto e, RowsWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]);
    return toAccumulator<T>(a, [=](auto *y) {
      using Y = std::remove_pointer_t<decltype(y)>;
      return cuda::reduceRows<T, Y>(x, y, w.rows, w.cols, s);
    });
  });
}

#endif

} // namespace sbpflow::ops

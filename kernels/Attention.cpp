// Causal multi-head self-attention at runtime, forward and backward: q, k, v
// [batch, T, heads * d], a rank holding whole heads (head-parallel) or whole
// sequences (batch-parallel). The T x T weights are never stored.
#include "kernels/Checks.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Attention.h"
#include "kernels/cuda/Dispatch.h"
#endif

#include <memory>

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// This rank's heads of [batch, T, heads * headDim] operands.
struct AttentionWork {
  int64_t batch = 0, T = 0, localHeads = 0, headDim = 0;
};

StatusOr<AttentionWork> attentionWork(const OpArgs &a) {
  const bool fwd = a.task.op() == K::CausalAttention;
  const TensorView *q = fwd ? a.in[0] : a.in[1];
  if (q->global.size() != 3 || q->local.size() != 3)
    return Status::error(a.at + ": q '" + q->name + "' must be [batch, T, C], is " +
                         toString(q->global));
  const int64_t heads = a.task.attrs_as_AttentionAttrs()->heads(), channels = q->global[2];
  if (heads <= 0 || channels % heads != 0)
    return Status::error(a.at + ": AttentionAttrs.heads " + std::to_string(heads) +
                         " must be positive and divide the " + std::to_string(channels) +
                         " channels");
  const int64_t headDim = channels / heads;
  // This rank's channels must be whole heads.
  if (q->region[2].begin % headDim != 0 || q->local[2] % headDim != 0)
    return Status::error(a.at + ": this rank holds channels [" +
                         std::to_string(q->region[2].begin) + ", " +
                         std::to_string(q->region[2].begin + q->local[2]) +
                         "), which cut through heads of " + std::to_string(headDim));
  for (const TensorView *t : a.in)
    if (t->local != q->local)
      return Status::error(a.at + ": attention operands differ in local shape");
  for (const TensorView *t : a.out)
    if (t->local != q->local)
      return Status::error(a.at + ": attention results differ from the operands' local shape");
  return AttentionWork{q->local[0], q->local[1], q->local[2] / headDim, headDim};
}

} // namespace

Status checkCausalAttention(const OpArgs &a) { return statusOf(attentionWork(a)); }
Status checkCausalAttentionGrad(const OpArgs &a) { return statusOf(attentionWork(a)); }

namespace {
float *cpuScratch(const OpArgs &a, const AttentionWork &w) {
  return static_cast<float *>(
      a.scratch(static_cast<size_t>(cpu::causalAttentionScratch(w.T, w.headDim) + 1) * 4));
}
} // namespace

StatusOr<Kernel> cpuCausalAttention(const OpArgs &args) {
  return checkedF32(args, attentionWork, [](const OpArgs &a, AttentionWork w) {
    float *scratch = cpuScratch(a, w);
    const float *q = data<float>(a.in[0]), *k = data<float>(a.in[1]), *v = data<float>(a.in[2]);
    float *y = data<float>(a.out[0]);
    return always(
        [=] { cpu::causalAttention(q, k, v, y, w.batch, w.T, w.localHeads, w.headDim, scratch); });
  });
}

StatusOr<Kernel> cpuCausalAttentionGrad(const OpArgs &args) {
  return checkedF32(args, attentionWork, [](const OpArgs &a, AttentionWork w) {
    float *scratch = cpuScratch(a, w);
    const float *dy = data<float>(a.in[0]), *q = data<float>(a.in[1]), *k = data<float>(a.in[2]),
                *v = data<float>(a.in[3]);
    float *dq = data<float>(a.out[0]), *dk = data<float>(a.out[1]), *dv = data<float>(a.out[2]);
    return always([=] {
      cpu::causalAttentionGrad(dy, q, k, v, dq, dk, dv, w.batch, w.T, w.localHeads, w.headDim,
                               scratch);
    });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

namespace {
StatusOr<AttentionWork> cudaAttentionWork(const OpArgs &a) {
  auto w = attentionWork(a);
  if (w && w->headDim > cuda::kMaxAttentionHeadDim)
    return Status::error(a.at + ": head size " + std::to_string(w->headDim) +
                         " exceeds the CUDA attention kernel's limit of " +
                         std::to_string(cuda::kMaxAttentionHeadDim));
  return w;
}
} // namespace

StatusOr<Kernel> cudaCausalAttention(const OpArgs &a) {
  return cuda::typedKernel(a, cudaAttentionWork, [&](auto e, AttentionWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *q = data<T>(a.in[0]), *k = data<T>(a.in[1]), *v = data<T>(a.in[2]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] {
      return cuda::causalAttention<T>(q, k, v, y, nullptr, w.batch, w.T, w.localHeads, w.headDim,
                                      s);
    });
  });
}

// The backward needs the forward's y and row statistics, but the plan gives
// CausalAttentionGrad only (dy, q, k, v): the forward's y may have been
// overwritten by then (its arena space is reused after its last reader) and
// the forward keeps no lse. So the backward recomputes the forward into its
// own scratch y (in T, as the forward's) and lse, one more attention pass per
// layer. Keeping them needs the compiler to connect the two tasks.
StatusOr<Kernel> cudaCausalAttentionGrad(const OpArgs &a) {
  return cuda::typedKernel(a, cudaAttentionWork, [&](auto e, AttentionWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    auto *lse = static_cast<float *>(a.scratch(
        static_cast<size_t>(cuda::causalAttentionLseSize(w.batch, w.T, w.localHeads)) * 4));
    T *ys = static_cast<T *>(a.scratch(static_cast<size_t>(elements(a.in[1])) * sizeof(T)));
    const T *dy = data<T>(a.in[0]), *q = data<T>(a.in[1]), *k = data<T>(a.in[2]),
            *v = data<T>(a.in[3]);
    T *dq = data<T>(a.out[0]), *dk = data<T>(a.out[1]), *dv = data<T>(a.out[2]);
    return launch(a, [=]() -> Status {
      if (Status st =
              cuda::causalAttention<T>(q, k, v, ys, lse, w.batch, w.T, w.localHeads, w.headDim, s);
          !st)
        return st;
      return cuda::causalAttentionGrad<T>(dy, q, k, v, ys, lse, dq, dk, dv, w.batch, w.T,
                                          w.localHeads, w.headDim, s);
    });
  });
}

#endif

} // namespace sbpflow::ops

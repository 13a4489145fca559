// Losses, metrics and reductions at runtime: softmax cross-entropy and its
// gradient, the count of correct rows, the mean and its gradient, and
// gradient clipping's sum of squares and scale. Losses, counts and sums are
// f32 whatever the logits' type (Ops.def's element types).
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Loss.h"
#endif

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// Logits rows, labels, classes.
struct XentWork {
  int64_t rows = 0, classes = 0;
};

StatusOr<XentWork> xentWork(const OpArgs &a) {
  XentWork w;
  if (Status s = rowsOf(a.in[0], w.rows, w.classes, a.at); !s)
    return s;
  if (elements(a.in[1]) != w.rows)
    return Status::error(a.at + ": " + std::to_string(elements(a.in[1])) + " labels for " +
                         std::to_string(w.rows) + " rows");
  if (a.task.op() == K::SoftmaxXentGrad && elements(a.in[2]) != w.rows)
    return Status::error(a.at + ": loss gradient size differs from the row count");
  return w;
}

// Mean reduces n inputs, MeanGrad spreads over n outputs; divided by count.
struct MeanWork {
  int64_t n = 0, count = 0;
};

Status scalar(const OpArgs &a, const TensorView *t, const std::string &what) {
  if (elements(t) != 1)
    return Status::error(a.at + ": " + what + " '" + t->name + "' must be a scalar, is " +
                         toString(t->local));
  return Status::ok();
}

StatusOr<MeanWork> meanWork(const OpArgs &a) {
  const bool fwd = a.task.op() == K::Mean;
  const TensorView *one = fwd ? a.out[0] : a.in[0];
  if (Status s = scalar(a, one, fwd ? "the mean" : "the mean's gradient"); !s)
    return s;
  return MeanWork{fwd ? elements(a.in[0]) : elements(a.out[0]),
                  a.task.attrs_as_MeanAttrs()->count()};
}

// SquareSum of n elements into a scalar.
StatusOr<int64_t> squareSumWork(const OpArgs &a) {
  if (Status s = scalar(a, a.out[0], "result"); !s)
    return s;
  return elements(a.in[0]);
}

// ClipScale of a scalar by max_norm.
StatusOr<float> clipWork(const OpArgs &a) {
  const float maxNorm = a.task.attrs_as_ClipAttrs()->max_norm();
  if (!(maxNorm > 0.0f))
    return Status::error(a.at + ": ClipAttrs.max_norm must be positive, is " +
                         std::to_string(maxNorm));
  if (Status s = scalar(a, a.in[0], "sum of squares"); !s)
    return s;
  if (Status s = scalar(a, a.out[0], "result"); !s)
    return s;
  return maxNorm;
}

// The words of a label outside the classes (BadId).
std::string badLabel(int64_t row, int32_t label, int64_t classes) {
  return "label " + std::to_string(label) + " at row " + std::to_string(row) +
         " is out of range for " + std::to_string(classes) + " classes";
}

} // namespace

Status checkSoftmaxXent(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkSoftmaxXentGrad(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkCountCorrect(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkMean(const OpArgs &a) { return statusOf(meanWork(a)); }
Status checkMeanGrad(const OpArgs &a) { return statusOf(meanWork(a)); }
Status checkSquareSum(const OpArgs &a) { return statusOf(squareSumWork(a)); }
Status checkClipScale(const OpArgs &a) { return statusOf(clipWork(a)); }

StatusOr<Kernel> cpuSoftmaxXent(const OpArgs &args) {
  return checkedF32(args, xentWork, [](const OpArgs &a, XentWork w) {
    const float *logits = data<float>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *loss = data<float>(a.out[0]);
    return launch(a, [=] {
      const int64_t bad = cpu::softmaxXent(logits, labels, loss, w.rows, w.classes);
      return idStatus(bad, labels, badLabel, w.classes);
    });
  });
}

StatusOr<Kernel> cpuSoftmaxXentGrad(const OpArgs &args) {
  return checkedF32(args, xentWork, [](const OpArgs &a, XentWork w) {
    const float *logits = data<float>(a.in[0]), *dloss = data<float>(a.in[2]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *dlogits = data<float>(a.out[0]);
    return always([=] { cpu::softmaxXentGrad(logits, labels, dloss, dlogits, w.rows, w.classes); });
  });
}

StatusOr<Kernel> cpuCountCorrect(const OpArgs &args) {
  return checkedF32(args, xentWork, [](const OpArgs &a, XentWork w) {
    const float *logits = data<float>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *count = data<float>(a.out[0]);
    return always([=] { cpu::countCorrect(logits, labels, count, w.rows, w.classes); });
  });
}

StatusOr<Kernel> cpuMean(const OpArgs &a) {
  return checked(a, meanWork, [](const OpArgs &a, MeanWork w) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::mean(x, y, w.n, w.count); });
  });
}

StatusOr<Kernel> cpuMeanGrad(const OpArgs &a) {
  return checked(a, meanWork, [](const OpArgs &a, MeanWork w) {
    const float *dy = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::meanGrad(dy, y, w.n, w.count); });
  });
}

StatusOr<Kernel> cpuSquareSum(const OpArgs &a) {
  return checked(a, squareSumWork, [](const OpArgs &a, int64_t n) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { *y = cpu::squareSum(x, n); });
  });
}

StatusOr<Kernel> cpuClipScale(const OpArgs &a) {
  return checked(a, clipWork, [](const OpArgs &a, float maxNorm) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { *y = cpu::clipScale(*x, maxNorm); });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

// Logits (and their gradient) are T; losses, the count and dloss F32.
StatusOr<Kernel> cudaSoftmaxXent(const OpArgs &a) {
  return cuda::typedKernel(a, xentWork, [&](auto e, XentWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const int32_t *labels = data<int32_t>(a.in[1]);
    int64_t *bad = cuda::badIdFlag(a, labels, badLabel, w.classes);
    const T *logits = data<T>(a.in[0]);
    float *loss = data<float>(a.out[0]);
    return launch(a, [=] {
      return cuda::softmaxXent<T>(logits, labels, loss, nullptr, bad, w.rows, w.classes, s);
    });
  });
}

StatusOr<Kernel> cudaSoftmaxXentGrad(const OpArgs &a) {
  return cuda::typedKernel(a, xentWork, [&](auto e, XentWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *logits = data<T>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    const float *dloss = data<float>(a.in[2]);
    T *dlogits = data<T>(a.out[0]);
    return launch(a, [=] {
      return cuda::softmaxXentGrad<T>(logits, labels, dloss, nullptr, dlogits, w.rows, w.classes,
                                      s);
    });
  });
}

StatusOr<Kernel> cudaCountCorrect(const OpArgs &a) {
  return cuda::typedKernel(a, xentWork, [&](auto e, XentWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *logits = data<T>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *count = data<float>(a.out[0]);
    return launch(
        a, [=] { return cuda::countCorrect<T>(logits, labels, count, w.rows, w.classes, s); });
  });
}

// Every reduction runs on the compute stream: they share the partials.
StatusOr<Kernel> cudaMean(const OpArgs &a) {
  return checked(a, meanWork, [](const OpArgs &a, MeanWork w) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return launch(a, [=, res = a.cuda, s = cuda::streamOf(a.stream)] {
      return cuda::mean(x, y, w.n, w.count, res->partials, s);
    });
  });
}

StatusOr<Kernel> cudaMeanGrad(const OpArgs &a) {
  return checked(a, meanWork, [](const OpArgs &a, MeanWork w) {
    const float *dy = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return launch(
        a, [=, s = cuda::streamOf(a.stream)] { return cuda::meanGrad(dy, y, w.n, w.count, s); });
  });
}

StatusOr<Kernel> cudaSquareSum(const OpArgs &a) {
  return checked(a, squareSumWork, [](const OpArgs &a, int64_t n) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return launch(a, [=, res = a.cuda, s = cuda::streamOf(a.stream)] {
      return cuda::squareSum(x, n, y, res->partials, s);
    });
  });
}

StatusOr<Kernel> cudaClipScale(const OpArgs &a) {
  return checked(a, clipWork, [](const OpArgs &a, float maxNorm) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return launch(
        a, [=, s = cuda::streamOf(a.stream)] { return cuda::clipScale(x, 1, maxNorm, y, s); });
  });
}

#endif

} // namespace sbpflow::ops

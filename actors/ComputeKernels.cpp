// Compute tasks of a plan as kernels over one rank's local buffers (see
// ComputeKernels.h). Shapes are checked here, once, not in a step.
#include "actors/ComputeKernels.h"

#include "actors/OpChecks.h"
#include "actors/ProgramLayout.h"

#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/data/DataSource.h"
#include "runtime/plan/PlanLoader.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace sbpflow {

void packRegion(const float *src, const Region &from, const Region &part, float *dst) {
  packRegion(src, from, part, dst, sizeof(float));
}

void unpackRegion(const float *src, const Region &part, float *dst, const Region &into) {
  unpackRegion(src, part, dst, into, sizeof(float));
}

void packRegion(const void *src, const Region &from, const Region &part, void *dst,
                size_t elementBytes) {
  if (regionElements(part) == 0)
    return;
  const RegionBox b = regionBox(from, part);
  cpu::copyRegion(src, b.shape, b.begin, b.size, b.rank, dst, elementBytes);
}

void unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                  size_t elementBytes) {
  if (regionElements(part) == 0)
    return;
  const RegionBox b = regionBox(into, part);
  cpu::copyIntoRegion(src, b.begin, b.size, dst, b.shape, b.rank, elementBytes);
}

StatusOr<Kernel> buildWithF32Shadows(const std::vector<const TensorView *> &in,
                                     const std::vector<const TensorView *> &out,
                                     const F32KernelBuilder &build) {
  auto isBf16 = [](const TensorView *t) { return t->dtype == plan::DType::BF16 && t->data; };
  if (std::none_of(in.begin(), in.end(), isBf16) && std::none_of(out.begin(), out.end(), isBf16))
    return build(in, out);

  // One shadow per distinct BF16 buffer, as large as its largest use.
  std::vector<void *> buffers;
  std::vector<int64_t> sizes;
  auto shadowIndex = [&](const TensorView *t) {
    const size_t i = std::find(buffers.begin(), buffers.end(), t->data) - buffers.begin();
    if (i == buffers.size()) {
      buffers.push_back(t->data);
      sizes.push_back(0);
    }
    sizes[i] = std::max(sizes[i], elementCount(t->local));
    return i;
  };
  for (const auto *list : {&in, &out})
    for (const TensorView *t : *list)
      if (isBf16(t))
        shadowIndex(t);
  struct Conversion {
    uint16_t *bf16;
    float *f32;
    int64_t n;
  };
  struct Shadows {
    std::vector<std::vector<float>> storage;
    std::vector<Conversion> widen, round;
  };
  auto shadows = std::make_shared<Shadows>();
  // At least one element: the shadow of an empty shard must not be null,
  // which would mean "not on this rank".
  for (int64_t n : sizes)
    shadows->storage.emplace_back(static_cast<size_t>(std::max<int64_t>(n, 1)));

  // The f32 views the kernel is built over; reserved, so pointers stay put.
  std::vector<TensorView> views;
  views.reserve(in.size() + out.size());
  auto f32View = [&](const TensorView *t, std::vector<Conversion> &conversions) {
    if (!isBf16(t))
      return t;
    float *shadow = shadows->storage[shadowIndex(t)].data();
    Conversion c{static_cast<uint16_t *>(t->data), shadow, elementCount(t->local)};
    // An input read twice is widened once.
    if (std::none_of(conversions.begin(), conversions.end(),
                     [&](const Conversion &o) { return o.bf16 == c.bf16 && o.n >= c.n; }))
      conversions.push_back(c);
    views.push_back(*t);
    views.back().data = shadow;
    views.back().dtype = plan::DType::F32;
    return static_cast<const TensorView *>(&views.back());
  };
  std::vector<const TensorView *> in32, out32;
  for (const TensorView *t : in)
    in32.push_back(f32View(t, shadows->widen));
  for (const TensorView *t : out)
    out32.push_back(f32View(t, shadows->round));
  auto built = build(in32, out32);
  if (!built || !*built)
    return built;
  return Kernel([kernel = built.take(), shadows](const StepContext &ctx) -> Status {
    for (const Conversion &c : shadows->widen)
      cpu::fromBf16(c.bf16, c.f32, c.n);
    if (Status s = kernel(ctx); !s)
      return s;
    for (const Conversion &c : shadows->round)
      cpu::toBf16(c.f32, c.bf16, c.n);
    return Status::ok();
  });
}

bool isComputeOp(plan::OpKind op) {
  using K = plan::OpKind;
  switch (op) {
  case K::Input:
  case K::Fill:
  case K::MatMul:
  case K::BiasAdd:
  case K::BiasGelu:
  case K::Add:
  case K::Relu:
  case K::ReluGrad:
  case K::SoftmaxXent:
  case K::SoftmaxXentGrad:
  case K::Mean:
  case K::MeanGrad:
  case K::ReduceRows:
  case K::CountCorrect:
  case K::Embedding:
  case K::EmbeddingGrad:
  case K::LayerNorm:
  case K::LayerNormGrad:
  case K::Gelu:
  case K::GeluGrad:
  case K::Softmax:
  case K::SoftmaxGrad:
  case K::CausalAttention:
  case K::CausalAttentionGrad:
  case K::Dropout:
  case K::Reshape:
  case K::Transpose:
  case K::Narrow:
  case K::NarrowGrad:
  case K::Concat:
  case K::SquareSum:
  case K::ClipScale:
  case K::Cast:
    return true;
  default:
    return false;
  }
}

namespace {

// A compute task's kernel over f32 (and i32) tensors; `storedOut` are the
// outputs as the plan stores them (BF16 where `out` holds f32 shadows).
StatusOr<Kernel> buildF32ComputeKernel(const plan::Task &task,
                                       const std::vector<const TensorView *> &in,
                                       const std::vector<const TensorView *> &out,
                                       const std::vector<const TensorView *> &storedOut,
                                       const std::string &at) {
  using K = plan::OpKind;
  auto f32 = [](const TensorView *t) { return static_cast<float *>(t->data); };
  auto i32 = [](const TensorView *t) { return static_cast<int32_t *>(t->data); };
  if (Status s = checkOperandCount(task, in, at); !s)
    return s;

  switch (task.op()) {
  case K::Input: {
    auto w = checkInput(task, out, at);
    if (!w)
      return w.status();
    void *dst = out[0]->data;
    return Kernel([=, w = w.take()](const StepContext &ctx) -> Status {
      if (Status s = checkDataField(w, ctx.data, at); !s)
        return s;
      Status s =
          ctx.data->fill(w.field, ctx.epoch, ctx.batch, w.globalBatch, w.rowBegin, w.rowCount, dst);
      return s ? s : s.withContext(at);
    });
  }
  case K::Fill: {
    const FillWork w = checkFill(task, out);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::fill(y, w.value, w.n);
      return Status::ok();
    });
  }
  case K::MatMul: {
    auto w = checkMatMul(task, in, out, at);
    if (!w)
      return w.status();
    const float *a = f32(in[0]), *b = f32(in[1]);
    float *c = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::matmul(a, b, c, w.m, w.n, w.k, w.transA, w.transB);
      return Status::ok();
    });
  }
  case K::BiasAdd: {
    auto w = checkBiasAdd(in, out, at);
    if (!w)
      return w.status();
    const float *x = f32(in[0]), *b = f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::biasAdd(x, b, y, w.rows, w.cols);
      return Status::ok();
    });
  }
  case K::BiasGelu: {
    auto w = checkBiasGelu(in, out, at);
    if (!w)
      return w.status();
    const float *x = f32(in[0]), *b = f32(in[1]);
    float *pre = f32(out[0]), *y = f32(out[1]);
    // Unfused, a BF16 pre is rounded when BiasAdd stores it and Gelu reads
    // the rounded value: so must the fused kernel, to give the same y.
    const bool preBf16 = storedOut[0]->dtype == plan::DType::BF16;
    return Kernel([=, w = *w](const StepContext &) {
      cpu::biasGelu(x, b, pre, y, w.rows, w.cols, preBf16);
      return Status::ok();
    });
  }
  case K::Add:
  case K::ReluGrad:
  case K::Relu:
  case K::Gelu:
  case K::GeluGrad:
  case K::Reshape:
  case K::Cast: { // f32 to f32: the conversions around the kernel do the cast
    auto w = checkElementwise(task, in, out, at);
    if (!w)
      return w.status();
    const int64_t n = w->n;
    const float *a = f32(in[0]), *b = in.size() > 1 ? f32(in[1]) : nullptr;
    float *y = f32(out[0]);
    const K op = task.op();
    return Kernel([=](const StepContext &) {
      switch (op) {
      case K::Add:
        cpu::add(a, b, y, n);
        break;
      case K::ReluGrad:
        cpu::reluGrad(a, b, y, n);
        break;
      case K::Relu:
        cpu::relu(a, y, n);
        break;
      case K::Gelu:
        cpu::gelu(a, y, n);
        break;
      case K::GeluGrad:
        cpu::geluGrad(a, b, y, n);
        break;
      default: // Reshape, Cast
        if (a != y && n > 0)
          std::memmove(y, a, n * sizeof(float));
      }
      return Status::ok();
    });
  }
  case K::SoftmaxXent:
  case K::CountCorrect:
  case K::SoftmaxXentGrad: {
    auto w = checkSoftmaxXent(task, in, at);
    if (!w)
      return w.status();
    const int64_t rows = w->rows, classes = w->cols;
    const float *logits = f32(in[0]);
    const int32_t *labels = i32(in[1]);
    float *y = f32(out[0]);
    if (task.op() == K::SoftmaxXent)
      return Kernel([=](const StepContext &) {
        int64_t bad = cpu::softmaxXent(logits, labels, y, rows, classes);
        if (bad >= 0)
          return Status::error(at + ": label " + std::to_string(labels[bad]) + " at row " +
                               std::to_string(bad) + " is out of range for " +
                               std::to_string(classes) + " classes");
        return Status::ok();
      });
    if (task.op() == K::CountCorrect)
      return Kernel([=](const StepContext &) {
        cpu::countCorrect(logits, labels, y, rows, classes);
        return Status::ok();
      });
    const float *dloss = f32(in[2]);
    return Kernel([=](const StepContext &) {
      cpu::softmaxXentGrad(logits, labels, dloss, y, rows, classes);
      return Status::ok();
    });
  }
  case K::Mean:
  case K::MeanGrad: {
    const MeanWork w = checkMean(task, in, out);
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::Mean)
      return Kernel([=](const StepContext &) {
        cpu::mean(x, y, w.n, w.count);
        return Status::ok();
      });
    return Kernel([=](const StepContext &) {
      cpu::meanGrad(x, y, w.n, w.count);
      return Status::ok();
    });
  }
  case K::ReduceRows: {
    auto w = checkReduceRows(in, out, at);
    if (!w)
      return w.status();
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::reduceRows(x, y, w.rows, w.cols);
      return Status::ok();
    });
  }
  case K::Embedding:
  case K::EmbeddingGrad: {
    auto w = checkEmbedding(task, in, out, at);
    if (!w)
      return w.status();
    const int32_t *ids = i32(in[1]);
    if (task.op() == K::Embedding) {
      const float *t = f32(in[0]);
      float *y = f32(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        int64_t bad = cpu::embedding(t, w.tableRows, w.rowBegin, w.vocab, ids, w.ids, w.dim, y);
        if (bad >= 0)
          return Status::error(at + ": token id " + std::to_string(ids[bad]) + " at position " +
                               std::to_string(bad) + " is outside the vocabulary of " +
                               std::to_string(w.vocab));
        return Status::ok();
      });
    }
    const float *dy = f32(in[0]);
    float *dt = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::embeddingGrad(dy, ids, w.ids, w.dim, dt, w.tableRows, w.rowBegin);
      return Status::ok();
    });
  }
  case K::LayerNorm:
  case K::LayerNormGrad: {
    auto w = checkLayerNorm(task, in, out, at);
    if (!w)
      return w.status();
    if (task.op() == K::LayerNorm) {
      const float *xp = f32(in[0]), *g = f32(in[1]), *b = f32(in[2]);
      float *y = f32(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        cpu::layerNorm(xp, g, b, y, w.rows, w.cols, w.eps);
        return Status::ok();
      });
    }
    const float *dy = f32(in[0]), *xp = f32(in[1]), *g = f32(in[2]);
    float *dx = f32(out[0]), *dg = f32(out[1]), *db = f32(out[2]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::layerNormGrad(dy, xp, g, dx, dg, db, w.rows, w.cols, w.eps);
      return Status::ok();
    });
  }
  case K::Softmax:
  case K::SoftmaxGrad: {
    auto w = checkSoftmax(task, in, out, at);
    if (!w)
      return w.status();
    const bool fwd = task.op() == K::Softmax;
    const float *a = f32(in[0]), *b = fwd ? nullptr : f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      if (fwd)
        cpu::softmax(a, y, w.rows, w.cols);
      else
        cpu::softmaxGrad(a, b, y, w.rows, w.cols);
      return Status::ok();
    });
  }
  case K::CausalAttention:
  case K::CausalAttentionGrad: {
    auto w = checkAttention(task, in, out, at);
    if (!w)
      return w.status();
    auto scratch = std::make_shared<std::vector<float>>(
        static_cast<size_t>(cpu::causalAttentionScratch(w->T, w->headDim)) + 1);
    if (task.op() == K::CausalAttention) {
      const float *qp = f32(in[0]), *kp = f32(in[1]), *vp = f32(in[2]);
      float *y = f32(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        cpu::causalAttention(qp, kp, vp, y, w.batch, w.T, w.localHeads, w.headDim, scratch->data());
        return Status::ok();
      });
    }
    const float *dy = f32(in[0]), *qp = f32(in[1]), *kp = f32(in[2]), *vp = f32(in[3]);
    float *dq = f32(out[0]), *dk = f32(out[1]), *dv = f32(out[2]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::causalAttentionGrad(dy, qp, kp, vp, dq, dk, dv, w.batch, w.T, w.localHeads, w.headDim,
                               scratch->data());
      return Status::ok();
    });
  }
  case K::Dropout: {
    auto w = checkDropout(task, in, out, at);
    if (!w)
      return w.status();
    auto d = std::make_shared<const DropoutWork>(w.take());
    const float *xp = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &ctx) {
      cpu::dropout(xp, y, d->global.data(), d->begin.data(), d->size.data(),
                   static_cast<int>(d->global.size()), d->p, d->seed,
                   static_cast<uint32_t>(ctx.batch), static_cast<uint32_t>(ctx.epoch));
      return Status::ok();
    });
  }
  case K::Transpose: {
    auto w = checkTranspose(task, in, out, at);
    if (!w)
      return w.status();
    auto t = std::make_shared<const TransposeWork>(w.take());
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::transpose(x, y, t->shape.data(), t->perm.data(), static_cast<int>(t->perm.size()));
      return Status::ok();
    });
  }
  case K::Narrow:
  case K::NarrowGrad: {
    auto w = checkNarrow(task, in, out, at);
    if (!w)
      return w.status();
    auto c = std::make_shared<const NarrowWork>(w.take());
    const int rank = static_cast<int>(c->whole.size());
    const float *x = f32(in[0]);
    float *yp = f32(out[0]);
    if (task.op() == K::Narrow)
      return Kernel([=](const StepContext &) {
        cpu::copyRegion(x, c->whole.data(), c->offset.data(), c->part.data(), rank, yp);
        return Status::ok();
      });
    return Kernel([=](const StepContext &) {
      cpu::fill(yp, 0.0f, c->n);
      cpu::copyIntoRegion(x, c->offset.data(), c->part.data(), yp, c->whole.data(), rank);
      return Status::ok();
    });
  }
  case K::Concat: {
    auto w = checkConcat(task, in, out, at);
    if (!w)
      return w.status();
    auto c = std::make_shared<const ConcatWork>(w.take());
    std::vector<const float *> parts;
    for (const TensorView *t : in)
      parts.push_back(f32(t));
    float *yp = f32(out[0]);
    return Kernel([=](const StepContext &) {
      const int rank = static_cast<int>(c->result.size());
      for (size_t i = 0; i < parts.size(); ++i)
        cpu::copyIntoRegion(parts[i], c->offsets[i].data(), c->parts[i].data(), yp,
                            c->result.data(), rank);
      return Status::ok();
    });
  }
  case K::SquareSum:
  case K::ClipScale: {
    auto w = checkScalarOp(task, in, out, at);
    if (!w)
      return w.status();
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::SquareSum)
      return Kernel([=, n = w->n](const StepContext &) {
        *y = cpu::squareSum(x, n);
        return Status::ok();
      });
    return Kernel([=, maxNorm = w->maxNorm](const StepContext &) {
      *y = cpu::clipScale(*x, maxNorm);
      return Status::ok();
    });
  }
  default:
    break;
  }
  return Status::error(at + ": not a compute op");
}

} // namespace

StatusOr<Kernel> buildComputeKernel(const plan::Task &task,
                                    const std::vector<const TensorView *> &in,
                                    const std::vector<const TensorView *> &out,
                                    const std::string &at) {
  return buildWithF32Shadows(in, out,
                             [&](const std::vector<const TensorView *> &in32,
                                 const std::vector<const TensorView *> &out32) {
                               return buildF32ComputeKernel(task, in32, out32, out, at);
                             });
}

} // namespace sbpflow

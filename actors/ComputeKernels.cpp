// Compute tasks of a plan as kernels over one rank's local buffers (see
// ComputeKernels.h). Shapes are checked here, once, not in a step.
#include "actors/ComputeKernels.h"

#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/data/DataSource.h"
#include "runtime/plan/PlanLoader.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace sbpflow {

// Copies `part` (a region in global coordinates) from a tensor holding
// `from` into the dense buffer dst.
void packRegion(const float *src, const Region &from, const Region &part, float *dst) {
  if (regionElements(part) == 0)
    return;
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  for (size_t i = 0; i < from.size(); ++i) {
    shape[i] = from[i].size;
    begin[i] = part[i].begin - from[i].begin;
    size[i] = part[i].size;
  }
  cpu::copyRegion(src, shape, begin, size, static_cast<int>(from.size()), dst);
}

// Copies a dense block holding `part` into a tensor holding `into`.
void unpackRegion(const float *src, const Region &part, float *dst, const Region &into) {
  if (regionElements(part) == 0)
    return;
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  for (size_t i = 0; i < into.size(); ++i) {
    shape[i] = into[i].size;
    begin[i] = part[i].begin - into[i].begin;
    size[i] = part[i].size;
  }
  cpu::copyIntoRegion(src, begin, size, dst, shape, static_cast<int>(into.size()));
}

bool isComputeOp(plan::OpKind op) {
  using K = plan::OpKind;
  switch (op) {
  case K::Input:
  case K::Fill:
  case K::MatMul:
  case K::BiasAdd:
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
    return true;
  default:
    return false;
  }
}

StatusOr<Kernel> buildComputeKernel(const plan::Task &task,
                                    const std::vector<const TensorView *> &in,
                                    const std::vector<const TensorView *> &out,
                                    const std::string &at) {
  using K = plan::OpKind;
  auto f32 = [](const TensorView *t) { return static_cast<float *>(t->data); };
  auto i32 = [](const TensorView *t) { return static_cast<int32_t *>(t->data); };
  auto elems = [](const TensorView *t) { return elementCount(t->local); };
  // A tensor as rows of its last axis.
  auto rows2d = [&](const TensorView *t, int64_t &rows, int64_t &cols) -> Status {
    if (t->local.empty())
      return Status::error(at + ": expects a tensor with at least one axis, got a scalar");
    cols = t->local.back();
    rows = cols ? elementCount(t->local) / cols : 0;
    return Status::ok();
  };
  auto needI32 = [&](const TensorView *t) -> Status {
    return t->dtype == plan::DType::I32 ? Status::ok()
                                        : Status::error(at + ": labels must be an i32 tensor");
  };
  auto sameSize = [&](std::initializer_list<const TensorView *> ts) -> Status {
    for (const TensorView *t : ts)
      if (elems(t) != elems(*ts.begin()))
        return Status::error(at + ": operands differ in local size (" +
                             toString((*ts.begin())->local) + " and " + toString(t->local) + ")");
    return Status::ok();
  };
  const size_t wantIn = task.inputs() ? task.inputs()->size() : 0;
  if (in.size() != wantIn)
    return Status::error(at + ": inputs missing");

  switch (task.op()) {
  case K::Input: {
    const TensorView *o = out[0];
    std::string field = task.attrs_as_InputAttrs()->field()->str();
    if (o->global.empty())
      return Status::error(at + ": input tensor must have a batch axis");
    for (size_t d = 0; d < o->sbp.size(); ++d)
      if (o->sbp[d].kind == SbpKind::Split && o->sbp[d].axis != 0)
        return Status::error(at + ": inputs may only be split on axis 0");
    int64_t globalBatch = o->global[0], rowBegin = o->region[0].begin, rowCount = o->region[0].size;
    int64_t sample = elementCount(o->global) / std::max<int64_t>(1, globalBatch);
    FieldType want = o->dtype == plan::DType::I32 ? FieldType::I32 : FieldType::F32;
    const std::string planShape = toString(o->global); // `o` dies with buildProgram
    void *dst = o->data;
    return Kernel([=](const StepContext &ctx) -> Status {
      if (!ctx.data)
        return Status::error(at + ": program reads data field '" + field +
                             "' but no data source was given");
      const FieldInfo *info = nullptr;
      for (const FieldInfo &fi : ctx.data->fields())
        if (fi.name == field)
          info = &fi;
      if (!info)
        return Status::error(at + ": data source has no field '" + field + "'");
      if (info->type != want || elementCount(info->sampleShape) != sample) {
        auto typeName = [](FieldType t) { return t == FieldType::I32 ? "i32" : "f32"; };
        return Status::error(at + ": data field '" + field + "' holds " + typeName(info->type) +
                             " samples of " + std::to_string(elementCount(info->sampleShape)) +
                             " elements, but the plan's input is " + typeName(want) + " " +
                             planShape + " (" + std::to_string(sample) + " elements per sample)");
      }
      Status s = ctx.data->fill(field, ctx.epoch, ctx.batch, globalBatch, rowBegin, rowCount, dst);
      return s ? s : s.withContext(at);
    });
  }
  case K::Fill: {
    float value = task.attrs_as_FillAttrs()->value();
    float *y = f32(out[0]);
    int64_t n = elems(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::fill(y, value, n);
      return Status::ok();
    });
  }
  case K::MatMul: {
    bool ta = false, tb = false;
    if (auto *a = task.attrs_as_MatMulAttrs()) {
      ta = a->transpose_a();
      tb = a->transpose_b();
    }
    // Operands of any rank >= 2 are matrices [product of leading axes, last].
    int64_t aRows = 0, aCols = 0, bRows = 0, bCols = 0;
    if (Status s = rows2d(in[0], aRows, aCols); !s)
      return s;
    if (Status s = rows2d(in[1], bRows, bCols); !s)
      return s;
    if (in[0]->local.size() < 2 || in[1]->local.size() < 2)
      return Status::error(at + ": matmul operands need at least two axes");
    int64_t m = ta ? aCols : aRows, k = ta ? aRows : aCols;
    int64_t k2 = tb ? bCols : bRows, n = tb ? bRows : bCols;
    if (k != k2 || elems(out[0]) != m * n)
      return Status::error(at + ": local shapes do not multiply ([" + std::to_string(m) + "x" +
                           std::to_string(k) + "] x [" + std::to_string(k2) + "x" +
                           std::to_string(n) + "] into " + toString(out[0]->local) + ")");
    const float *a = f32(in[0]), *b = f32(in[1]);
    float *c = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::matmul(a, b, c, m, n, k, ta, tb);
      return Status::ok();
    });
  }
  case K::BiasAdd: {
    // The bias covers the trailing axes of x: x is [rows, bias size].
    const int64_t cols = elems(in[1]);
    const int64_t rows = cols ? elems(in[0]) / cols : 0;
    if (rows * cols != elems(in[0]) || elems(out[0]) != elems(in[0]))
      return Status::error(at + ": bias " + toString(in[1]->local) +
                           " does not cover the trailing axes of " + toString(in[0]->local));
    const float *x = f32(in[0]), *b = f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::biasAdd(x, b, y, rows, cols);
      return Status::ok();
    });
  }
  case K::Add:
  case K::ReluGrad: {
    int64_t n = elems(out[0]);
    if (elems(in[0]) != n || elems(in[1]) != n)
      return Status::error(at + ": operands differ in local size");
    const float *a = f32(in[0]), *b = f32(in[1]);
    float *y = f32(out[0]);
    bool add = task.op() == K::Add;
    return Kernel([=](const StepContext &) {
      if (add)
        cpu::add(a, b, y, n);
      else
        cpu::reluGrad(a, b, y, n);
      return Status::ok();
    });
  }
  case K::Relu: {
    int64_t n = elems(out[0]);
    if (elems(in[0]) != n)
      return Status::error(at + ": input and output differ in local size");
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::relu(x, y, n);
      return Status::ok();
    });
  }
  case K::SoftmaxXent:
  case K::CountCorrect:
  case K::SoftmaxXentGrad: {
    int64_t rows = 0, classes = 0;
    if (Status s = rows2d(in[0], rows, classes); !s)
      return s;
    if (Status s = needI32(in[1]); !s)
      return s;
    if (elems(in[1]) != rows)
      return Status::error(at + ": " + std::to_string(elems(in[1])) + " labels for " +
                           std::to_string(rows) + " rows");
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
    if (elems(in[2]) != rows)
      return Status::error(at + ": loss gradient size differs from the row count");
    const float *dloss = f32(in[2]);
    return Kernel([=](const StepContext &) {
      cpu::softmaxXentGrad(logits, labels, dloss, y, rows, classes);
      return Status::ok();
    });
  }
  case K::Mean:
  case K::MeanGrad: {
    int64_t count = task.attrs_as_MeanAttrs()->count();
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::Mean) {
      int64_t n = elems(in[0]);
      return Kernel([=](const StepContext &) {
        cpu::mean(x, y, n, count);
        return Status::ok();
      });
    }
    int64_t n = elems(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::meanGrad(x, y, n, count);
      return Status::ok();
    });
  }
  case K::ReduceRows: {
    int64_t cols = elems(out[0]);
    int64_t rows = cols ? elems(in[0]) / cols : 0;
    if (rows * cols != elems(in[0]))
      return Status::error(at + ": input size is not a multiple of the output size");
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::reduceRows(x, y, rows, cols);
      return Status::ok();
    });
  }
  case K::Embedding:
  case K::EmbeddingGrad: {
    const bool fwd = task.op() == K::Embedding;
    const TensorView *table = fwd ? in[0] : out[0];
    const TensorView *rowsOf = fwd ? out[0] : in[0]; // [..., C]
    if (Status s = needI32(in[1]); !s)
      return Status::error(at + ": token ids must be an i32 tensor");
    if (table->local.size() != 2)
      return Status::error(at + ": the embedding table must be [vocab, dim]");
    const int64_t dim = table->local[1];
    if (elems(rowsOf) != elems(in[1]) * dim)
      return Status::error(at + ": " + std::to_string(elems(in[1])) + " ids of width " +
                           std::to_string(dim) + " do not fill " + toString(rowsOf->local));
    const int64_t tableRows = table->local[0], rowBegin = table->region[0].begin,
                  vocab = table->global[0], n = elems(in[1]);
    const int32_t *ids = i32(in[1]);
    if (fwd) {
      const float *t = f32(in[0]);
      float *y = f32(out[0]);
      return Kernel([=](const StepContext &) {
        int64_t bad = cpu::embedding(t, tableRows, rowBegin, vocab, ids, n, dim, y);
        if (bad >= 0)
          return Status::error(at + ": token id " + std::to_string(ids[bad]) + " at position " +
                               std::to_string(bad) + " is outside the vocabulary of " +
                               std::to_string(vocab));
        return Status::ok();
      });
    }
    const float *dy = f32(in[0]);
    float *dt = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::embeddingGrad(dy, ids, n, dim, dt, tableRows, rowBegin);
      return Status::ok();
    });
  }
  case K::LayerNorm:
  case K::LayerNormGrad: {
    const bool fwd = task.op() == K::LayerNorm;
    const TensorView *x = fwd ? in[0] : in[1];
    const TensorView *gamma = fwd ? in[1] : in[2];
    int64_t rows = 0, cols = 0;
    if (Status s = rows2d(x, rows, cols); !s)
      return s;
    if (elems(gamma) != cols)
      return Status::error(at + ": layer norm weights hold " + std::to_string(elems(gamma)) +
                           " elements for rows of " + std::to_string(cols));
    const float eps = task.attrs_as_NormAttrs() ? task.attrs_as_NormAttrs()->eps() : 1e-5f;
    if (fwd) {
      if (Status s = sameSize({in[0], out[0]}); !s)
        return s;
      if (elems(in[2]) != cols)
        return Status::error(at + ": layer norm bias size differs from the row length");
      const float *xp = f32(in[0]), *g = f32(in[1]), *b = f32(in[2]);
      float *y = f32(out[0]);
      return Kernel([=](const StepContext &) {
        cpu::layerNorm(xp, g, b, y, rows, cols, eps);
        return Status::ok();
      });
    }
    if (out.size() != 3 || elems(out[1]) != cols || elems(out[2]) != cols)
      return Status::error(at + ": layer norm gradient needs dx, dgamma and dbeta");
    if (Status s = sameSize({in[0], in[1], out[0]}); !s)
      return s;
    const float *dy = f32(in[0]), *xp = f32(in[1]), *g = f32(in[2]);
    float *dx = f32(out[0]), *dg = f32(out[1]), *db = f32(out[2]);
    return Kernel([=](const StepContext &) {
      cpu::layerNormGrad(dy, xp, g, dx, dg, db, rows, cols, eps);
      return Status::ok();
    });
  }
  case K::Gelu:
  case K::GeluGrad: {
    const bool fwd = task.op() == K::Gelu;
    if (Status s = fwd ? sameSize({in[0], out[0]}) : sameSize({in[0], in[1], out[0]}); !s)
      return s;
    const int64_t n = elems(out[0]);
    const float *a = f32(in[0]), *b = fwd ? nullptr : f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      if (fwd)
        cpu::gelu(a, y, n);
      else
        cpu::geluGrad(a, b, y, n);
      return Status::ok();
    });
  }
  case K::Softmax:
  case K::SoftmaxGrad: {
    const bool fwd = task.op() == K::Softmax;
    int64_t rows = 0, cols = 0;
    if (Status s = rows2d(in[0], rows, cols); !s)
      return s;
    if (Status s = fwd ? sameSize({in[0], out[0]}) : sameSize({in[0], in[1], out[0]}); !s)
      return s;
    const float *a = f32(in[0]), *b = fwd ? nullptr : f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      if (fwd)
        cpu::softmax(a, y, rows, cols);
      else
        cpu::softmaxGrad(a, b, y, rows, cols);
      return Status::ok();
    });
  }
  case K::CausalAttention:
  case K::CausalAttentionGrad: {
    const bool fwd = task.op() == K::CausalAttention;
    const TensorView *q = fwd ? in[0] : in[1];
    const auto *attrs = task.attrs_as_AttentionAttrs();
    if (!attrs || attrs->heads() <= 0)
      return Status::error(at + ": attention needs a positive head count");
    if (q->local.size() != 3 || q->global.size() != 3)
      return Status::error(at + ": attention operands must be [batch, time, channels]");
    const int64_t heads = attrs->heads(), channels = q->global[2];
    if (channels % heads != 0)
      return Status::error(at + ": " + std::to_string(channels) + " channels do not split into " +
                           std::to_string(heads) + " heads");
    const int64_t headDim = channels / heads;
    // This rank's channels must be whole heads.
    if (q->region[2].begin % headDim != 0 || q->local[2] % headDim != 0)
      return Status::error(at + ": this rank holds channels [" +
                           std::to_string(q->region[2].begin) + ", " +
                           std::to_string(q->region[2].begin + q->local[2]) +
                           "), which cut through heads of " + std::to_string(headDim));
    for (const TensorView *t : in)
      if (t->local != q->local)
        return Status::error(at + ": attention operands differ in local shape");
    for (const TensorView *t : out)
      if (t->local != q->local)
        return Status::error(at + ": attention results differ from the operands' local shape");
    const int64_t batch = q->local[0], T = q->local[1], localHeads = q->local[2] / headDim;
    auto scratch = std::make_shared<std::vector<float>>(
        static_cast<size_t>(cpu::causalAttentionScratch(T, headDim)) + 1);
    if (fwd) {
      if (out.size() != 1)
        return Status::error(at + ": attention has one result");
      const float *qp = f32(in[0]), *kp = f32(in[1]), *vp = f32(in[2]);
      float *y = f32(out[0]);
      return Kernel([=](const StepContext &) {
        cpu::causalAttention(qp, kp, vp, y, batch, T, localHeads, headDim, scratch->data());
        return Status::ok();
      });
    }
    if (out.size() != 3)
      return Status::error(at + ": attention gradient has three results (dq, dk, dv)");
    const float *dy = f32(in[0]), *qp = f32(in[1]), *kp = f32(in[2]), *vp = f32(in[3]);
    float *dq = f32(out[0]), *dk = f32(out[1]), *dv = f32(out[2]);
    return Kernel([=](const StepContext &) {
      cpu::causalAttentionGrad(dy, qp, kp, vp, dq, dk, dv, batch, T, localHeads, headDim,
                               scratch->data());
      return Status::ok();
    });
  }
  case K::Dropout: {
    const auto *attrs = task.attrs_as_DropoutAttrs();
    if (!attrs || !(attrs->p() >= 0.0f && attrs->p() < 1.0f))
      return Status::error(at + ": dropout probability must be in [0, 1)");
    if (Status s = sameSize({in[0], out[0]}); !s)
      return s;
    const TensorView *x = in[0];
    const int rank = static_cast<int>(x->global.size());
    auto global = std::make_shared<std::vector<int64_t>>(x->global);
    auto begin = std::make_shared<std::vector<int64_t>>();
    auto size = std::make_shared<std::vector<int64_t>>();
    for (const Chunk &c : x->region) {
      begin->push_back(c.begin);
      size->push_back(c.size);
    }
    const float p = attrs->p();
    const uint64_t seed = attrs->seed();
    const float *xp = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &ctx) {
      cpu::dropout(xp, y, global->data(), begin->data(), size->data(), rank, p, seed,
                   static_cast<uint32_t>(ctx.batch), static_cast<uint32_t>(ctx.epoch));
      return Status::ok();
    });
  }
  case K::Reshape: {
    if (Status s = sameSize({in[0], out[0]}); !s)
      return s;
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    const int64_t n = elems(out[0]);
    return Kernel([=](const StepContext &) {
      if (x != y && n > 0)
        std::memmove(y, x, n * sizeof(float));
      return Status::ok();
    });
  }
  case K::Transpose: {
    const auto *attrs = task.attrs_as_TransposeAttrs();
    const Shape &xs = in[0]->local;
    const int rank = static_cast<int>(xs.size());
    if (!attrs || static_cast<int>(attrs->perm()->size()) != rank ||
        out[0]->local.size() != xs.size())
      return Status::error(at + ": permutation does not match the rank of " + toString(xs));
    auto perm = std::make_shared<std::vector<int>>();
    for (int i = 0; i < rank; ++i) {
      int from = attrs->perm()->Get(i);
      if (from < 0 || from >= rank || out[0]->local[i] != xs[from])
        return Status::error(at + ": " + toString(out[0]->local) + " is not a permutation of " +
                             toString(xs));
      perm->push_back(from);
    }
    auto shape = std::make_shared<Shape>(xs);
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::transpose(x, y, shape->data(), perm->data(), rank);
      return Status::ok();
    });
  }
  case K::Narrow:
  case K::NarrowGrad:
  case K::Concat: {
    // Along an axis no rank splits, so the local tensors are narrowed or
    // joined exactly as the global ones.
    const int axis = task.op() == K::Concat
                         ? (task.attrs_as_ConcatAttrs() ? task.attrs_as_ConcatAttrs()->axis() : -1)
                         : (task.attrs_as_NarrowAttrs() ? task.attrs_as_NarrowAttrs()->axis() : -1);
    const TensorView *y = out[0];
    const int rank = static_cast<int>(y->local.size());
    if (axis < 0 || axis >= rank)
      return Status::error(at + ": axis " + std::to_string(axis) + " out of range for " +
                           toString(y->local));
    for (const TensorView *t : in) {
      if (static_cast<int>(t->local.size()) != rank)
        return Status::error(at + ": operands differ in rank");
      if (t->local[axis] != t->global[axis])
        return Status::error(at + ": axis " + std::to_string(axis) + " is split across ranks");
      for (int d = 0; d < rank; ++d)
        if (d != axis && t->local[d] != y->local[d])
          return Status::error(at + ": " + toString(t->local) + " and " + toString(y->local) +
                               " differ off the axis");
    }
    if (y->local[axis] != y->global[axis])
      return Status::error(at + ": axis " + std::to_string(axis) + " is split across ranks");
    if (task.op() == K::Narrow || task.op() == K::NarrowGrad) {
      const int64_t begin = task.attrs_as_NarrowAttrs()->begin();
      const TensorView *whole = task.op() == K::Narrow ? in[0] : y;
      const TensorView *part = task.op() == K::Narrow ? y : in[0];
      if (begin < 0 || begin + part->local[axis] > whole->local[axis])
        return Status::error(at + ": range [" + std::to_string(begin) + ", " +
                             std::to_string(begin + part->local[axis]) + ") exceeds axis " +
                             std::to_string(axis) + " of " + toString(whole->local));
      auto wholeShape = std::make_shared<Shape>(whole->local);
      auto offset = std::make_shared<Shape>(rank, 0);
      (*offset)[axis] = begin;
      auto partShape = std::make_shared<Shape>(part->local);
      const float *x = f32(in[0]);
      float *yp = f32(y);
      const int64_t n = elems(y);
      if (task.op() == K::Narrow)
        return Kernel([=](const StepContext &) {
          cpu::copyRegion(x, wholeShape->data(), offset->data(), partShape->data(), rank, yp);
          return Status::ok();
        });
      return Kernel([=](const StepContext &) {
        cpu::fill(yp, 0.0f, n);
        cpu::copyIntoRegion(x, offset->data(), partShape->data(), yp, wholeShape->data(), rank);
        return Status::ok();
      });
    }
    int64_t total = 0;
    std::vector<std::pair<const float *, std::shared_ptr<Shape>>> parts;
    std::vector<std::shared_ptr<Shape>> offsets;
    for (const TensorView *t : in) {
      auto offset = std::make_shared<Shape>(rank, 0);
      (*offset)[axis] = total;
      total += t->local[axis];
      parts.emplace_back(f32(t), std::make_shared<Shape>(t->local));
      offsets.push_back(offset);
    }
    if (total != y->local[axis])
      return Status::error(at + ": operands add up to " + std::to_string(total) + " along axis " +
                           std::to_string(axis) + ", the result has " +
                           std::to_string(y->local[axis]));
    auto yShape = std::make_shared<Shape>(y->local);
    float *yp = f32(y);
    return Kernel([=](const StepContext &) {
      for (size_t i = 0; i < parts.size(); ++i)
        cpu::copyIntoRegion(parts[i].first, offsets[i]->data(), parts[i].second->data(), yp,
                            yShape->data(), rank);
      return Status::ok();
    });
  }
  case K::SquareSum:
  case K::ClipScale: {
    if (elems(out[0]) != 1)
      return Status::error(at + ": the result must be a scalar");
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::SquareSum) {
      const int64_t n = elems(in[0]);
      return Kernel([=](const StepContext &) {
        *y = cpu::squareSum(x, n);
        return Status::ok();
      });
    }
    if (elems(in[0]) != 1 || !task.attrs_as_ClipAttrs())
      return Status::error(at + ": clip_scale takes a scalar and max_norm");
    const float maxNorm = task.attrs_as_ClipAttrs()->max_norm();
    return Kernel([=](const StepContext &) {
      *y = cpu::clipScale(*x, maxNorm);
      return Status::ok();
    });
  }
  default:
    break;
  }
  return Status::error(at + ": not a compute op");
}

} // namespace sbpflow

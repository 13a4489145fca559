// The checks of a compute task, shared by the CPU and CUDA kernel builders
// (see OpChecks.h); the messages here are what a user sees for a bad plan.
#include "actors/OpChecks.h"

#include "runtime/plan/PlanLoader.h"

#include <algorithm>
#include <initializer_list>

namespace sbpflow {
namespace {

using K = plan::OpKind;

int64_t elems(const TensorView *t) { return elementCount(t->local); }

// A tensor as rows of its last axis.
Status rows2d(const TensorView *t, int64_t &rows, int64_t &cols, const std::string &at) {
  if (t->local.empty())
    return Status::error(at + ": expects a tensor with at least one axis, got a scalar");
  cols = t->local.back();
  rows = cols ? elementCount(t->local) / cols : 0;
  return Status::ok();
}

Status sameSize(std::initializer_list<const TensorView *> ts, const std::string &at) {
  for (const TensorView *t : ts)
    if (elems(t) != elems(*ts.begin()))
      return Status::error(at + ": operands differ in local size (" +
                           toString((*ts.begin())->local) + " and " + toString(t->local) + ")");
  return Status::ok();
}

// Narrow, NarrowGrad and Concat work along an axis no rank splits, so the
// local tensors are narrowed or joined exactly as the global ones.
StatusOr<int> checkAxisOp(const plan::Task &task, const Operands &in, const Operands &out,
                          const std::string &at) {
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
  return axis;
}

} // namespace

Status checkOperandCount(const plan::Task &task, const Operands &in, const std::string &at) {
  const size_t wantIn = task.inputs() ? task.inputs()->size() : 0;
  if (in.size() != wantIn)
    return Status::error(at + ": inputs missing");
  return Status::ok();
}

StatusOr<InputWork> checkInput(const plan::Task &task, const Operands &out, const std::string &at) {
  const TensorView *o = out[0];
  InputWork w;
  w.field = task.attrs_as_InputAttrs()->field()->str();
  if (o->global.empty())
    return Status::error(at + ": input tensor must have a batch axis");
  for (size_t d = 0; d < o->sbp.size(); ++d)
    if (o->sbp[d].kind == SbpKind::Split && o->sbp[d].axis != 0)
      return Status::error(at + ": inputs may only be split on axis 0");
  w.globalBatch = o->global[0];
  w.rowBegin = o->region[0].begin;
  w.rowCount = o->region[0].size;
  w.sample = elementCount(o->global) / std::max<int64_t>(1, w.globalBatch);
  w.type = o->dtype == plan::DType::I32 ? FieldType::I32 : FieldType::F32;
  w.planShape = toString(o->global);
  return w;
}

Status checkDataField(const InputWork &w, const DataSource *data, const std::string &at) {
  if (!data)
    return Status::error(at + ": program reads data field '" + w.field +
                         "' but no data source was given");
  const FieldInfo *info = nullptr;
  for (const FieldInfo &fi : data->fields())
    if (fi.name == w.field)
      info = &fi;
  if (!info)
    return Status::error(at + ": data source has no field '" + w.field + "'");
  if (info->type != w.type || elementCount(info->sampleShape) != w.sample) {
    auto typeName = [](FieldType t) { return t == FieldType::I32 ? "i32" : "f32"; };
    return Status::error(at + ": data field '" + w.field + "' holds " + typeName(info->type) +
                         " samples of " + std::to_string(elementCount(info->sampleShape)) +
                         " elements, but the plan's input is " + typeName(w.type) + " " +
                         w.planShape + " (" + std::to_string(w.sample) + " elements per sample)");
  }
  return Status::ok();
}

FillWork checkFill(const plan::Task &task, const Operands &out) {
  return FillWork{task.attrs_as_FillAttrs()->value(), elems(out[0])};
}

StatusOr<MatMulWork> checkMatMul(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at) {
  MatMulWork w;
  if (auto *a = task.attrs_as_MatMulAttrs()) {
    w.transA = a->transpose_a();
    w.transB = a->transpose_b();
  }
  // Operands of any rank >= 2 are matrices [product of leading axes, last].
  int64_t aRows = 0, aCols = 0, bRows = 0, bCols = 0;
  if (Status s = rows2d(in[0], aRows, aCols, at); !s)
    return s;
  if (Status s = rows2d(in[1], bRows, bCols, at); !s)
    return s;
  if (in[0]->local.size() < 2 || in[1]->local.size() < 2)
    return Status::error(at + ": matmul operands need at least two axes");
  w.m = w.transA ? aCols : aRows;
  w.k = w.transA ? aRows : aCols;
  const int64_t k2 = w.transB ? bCols : bRows;
  w.n = w.transB ? bRows : bCols;
  if (w.k != k2 || elems(out[0]) != w.m * w.n)
    return Status::error(at + ": local shapes do not multiply ([" + std::to_string(w.m) + "x" +
                         std::to_string(w.k) + "] x [" + std::to_string(k2) + "x" +
                         std::to_string(w.n) + "] into " + toString(out[0]->local) + ")");
  return w;
}

StatusOr<RowsWork> checkBiasAdd(const Operands &in, const Operands &out, const std::string &at) {
  // The bias covers the trailing axes of x: x is [rows, bias size].
  RowsWork w;
  w.cols = elems(in[1]);
  w.rows = w.cols ? elems(in[0]) / w.cols : 0;
  if (w.rows * w.cols != elems(in[0]) || elems(out[0]) != elems(in[0]))
    return Status::error(at + ": bias " + toString(in[1]->local) +
                         " does not cover the trailing axes of " + toString(in[0]->local));
  return w;
}

StatusOr<RowsWork> checkBiasGelu(const Operands &in, const Operands &out, const std::string &at) {
  if (out.size() != 2)
    return Status::error(at + ": expects 2 outputs (x + bias and its GELU), has " +
                         std::to_string(out.size()));
  auto w = checkBiasAdd(in, out, at);
  if (w && out[1]->local != out[0]->local)
    return Status::error(at + ": GELU output " + toString(out[1]->local) +
                         " differs in shape from the pre-activation " + toString(out[0]->local));
  return w;
}

StatusOr<RowsWork> checkReduceRows(const Operands &in, const Operands &out, const std::string &at) {
  RowsWork w;
  w.cols = elems(out[0]);
  w.rows = w.cols ? elems(in[0]) / w.cols : 0;
  if (w.rows * w.cols != elems(in[0]))
    return Status::error(at + ": input size is not a multiple of the output size");
  return w;
}

StatusOr<RowsWork> checkSoftmaxXent(const plan::Task &task, const Operands &in,
                                    const std::string &at) {
  RowsWork w;
  if (Status s = rows2d(in[0], w.rows, w.cols, at); !s)
    return s;
  // Labels are I32: the plan loader's dtype rules.
  if (elems(in[1]) != w.rows)
    return Status::error(at + ": " + std::to_string(elems(in[1])) + " labels for " +
                         std::to_string(w.rows) + " rows");
  if (task.op() == K::SoftmaxXentGrad && (in.size() < 3 || elems(in[2]) != w.rows))
    return Status::error(at + ": loss gradient size differs from the row count");
  return w;
}

StatusOr<RowsWork> checkSoftmax(const plan::Task &task, const Operands &in, const Operands &out,
                                const std::string &at) {
  RowsWork w;
  if (Status s = rows2d(in[0], w.rows, w.cols, at); !s)
    return s;
  const bool fwd = task.op() == K::Softmax;
  if (Status s = fwd ? sameSize({in[0], out[0]}, at) : sameSize({in[0], in[1], out[0]}, at); !s)
    return s;
  return w;
}

StatusOr<ElementwiseWork> checkElementwise(const plan::Task &task, const Operands &in,
                                           const Operands &out, const std::string &at) {
  const int64_t n = elems(out[0]);
  switch (task.op()) {
  case K::Add:
  case K::ReluGrad:
    if (elems(in[0]) != n || elems(in[1]) != n)
      return Status::error(at + ": operands differ in local size");
    break;
  case K::Relu:
    if (elems(in[0]) != n)
      return Status::error(at + ": input and output differ in local size");
    break;
  case K::GeluGrad:
    if (Status s = sameSize({in[0], in[1], out[0]}, at); !s)
      return s;
    break;
  default: // Gelu, Reshape, Cast
    if (Status s = sameSize({in[0], out[0]}, at); !s)
      return s;
  }
  return ElementwiseWork{n};
}

MeanWork checkMean(const plan::Task &task, const Operands &in, const Operands &out) {
  return MeanWork{task.op() == K::Mean ? elems(in[0]) : elems(out[0]),
                  task.attrs_as_MeanAttrs()->count()};
}

StatusOr<EmbeddingWork> checkEmbedding(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at) {
  const bool fwd = task.op() == K::Embedding;
  const TensorView *table = fwd ? in[0] : out[0];
  const TensorView *rowsOf = fwd ? out[0] : in[0]; // [..., C]
  if (table->local.size() != 2)
    return Status::error(at + ": the embedding table must be [vocab, dim]");
  const int64_t dim = table->local[1];
  if (elems(rowsOf) != elems(in[1]) * dim)
    return Status::error(at + ": " + std::to_string(elems(in[1])) + " ids of width " +
                         std::to_string(dim) + " do not fill " + toString(rowsOf->local));
  return EmbeddingWork{table->local[0], table->region[0].begin, table->global[0], elems(in[1]),
                       dim};
}

StatusOr<LayerNormWork> checkLayerNorm(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at) {
  const bool fwd = task.op() == K::LayerNorm;
  const TensorView *x = fwd ? in[0] : in[1];
  const TensorView *gamma = fwd ? in[1] : in[2];
  LayerNormWork w;
  if (Status s = rows2d(x, w.rows, w.cols, at); !s)
    return s;
  if (elems(gamma) != w.cols)
    return Status::error(at + ": layer norm weights hold " + std::to_string(elems(gamma)) +
                         " elements for rows of " + std::to_string(w.cols));
  if (task.attrs_as_NormAttrs())
    w.eps = task.attrs_as_NormAttrs()->eps();
  if (fwd) {
    if (Status s = sameSize({in[0], out[0]}, at); !s)
      return s;
    if (elems(in[2]) != w.cols)
      return Status::error(at + ": layer norm bias size differs from the row length");
    return w;
  }
  if (out.size() != 3 || elems(out[1]) != w.cols || elems(out[2]) != w.cols)
    return Status::error(at + ": layer norm gradient needs dx, dgamma and dbeta");
  if (Status s = sameSize({in[0], in[1], out[0]}, at); !s)
    return s;
  return w;
}

StatusOr<AttentionWork> checkAttention(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at,
                                       int64_t maxHeadDim) {
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
  if (maxHeadDim > 0 && headDim > maxHeadDim)
    return Status::error(at + ": head size " + std::to_string(headDim) +
                         " exceeds the CUDA attention kernel's limit of " +
                         std::to_string(maxHeadDim));
  // This rank's channels must be whole heads.
  if (q->region[2].begin % headDim != 0 || q->local[2] % headDim != 0)
    return Status::error(at + ": this rank holds channels [" + std::to_string(q->region[2].begin) +
                         ", " + std::to_string(q->region[2].begin + q->local[2]) +
                         "), which cut through heads of " + std::to_string(headDim));
  for (const TensorView *t : in)
    if (t->local != q->local)
      return Status::error(at + ": attention operands differ in local shape");
  for (const TensorView *t : out)
    if (t->local != q->local)
      return Status::error(at + ": attention results differ from the operands' local shape");
  if (fwd && out.size() != 1)
    return Status::error(at + ": attention has one result");
  if (!fwd && out.size() != 3)
    return Status::error(at + ": attention gradient has three results (dq, dk, dv)");
  return AttentionWork{q->local[0], q->local[1], q->local[2] / headDim, headDim};
}

StatusOr<DropoutWork> checkDropout(const plan::Task &task, const Operands &in, const Operands &out,
                                   const std::string &at) {
  const auto *attrs = task.attrs_as_DropoutAttrs();
  if (!attrs || !(attrs->p() >= 0.0f && attrs->p() < 1.0f))
    return Status::error(at + ": dropout probability must be in [0, 1)");
  if (Status s = sameSize({in[0], out[0]}, at); !s)
    return s;
  DropoutWork w;
  w.global = in[0]->global;
  for (const Chunk &c : in[0]->region) {
    w.begin.push_back(c.begin);
    w.size.push_back(c.size);
  }
  w.p = attrs->p();
  w.seed = attrs->seed();
  return w;
}

StatusOr<TransposeWork> checkTranspose(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at) {
  const auto *attrs = task.attrs_as_TransposeAttrs();
  const Shape &xs = in[0]->local;
  const int rank = static_cast<int>(xs.size());
  if (!attrs || static_cast<int>(attrs->perm()->size()) != rank ||
      out[0]->local.size() != xs.size())
    return Status::error(at + ": permutation does not match the rank of " + toString(xs));
  TransposeWork w;
  w.shape = xs;
  for (int i = 0; i < rank; ++i) {
    int from = attrs->perm()->Get(i);
    if (from < 0 || from >= rank || out[0]->local[i] != xs[from])
      return Status::error(at + ": " + toString(out[0]->local) + " is not a permutation of " +
                           toString(xs));
    w.perm.push_back(from);
  }
  return w;
}

StatusOr<NarrowWork> checkNarrow(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at) {
  auto axisOr = checkAxisOp(task, in, out, at);
  if (!axisOr)
    return axisOr.status();
  const int axis = *axisOr;
  const int64_t begin = task.attrs_as_NarrowAttrs()->begin();
  const TensorView *whole = task.op() == K::Narrow ? in[0] : out[0];
  const TensorView *part = task.op() == K::Narrow ? out[0] : in[0];
  if (begin < 0 || begin + part->local[axis] > whole->local[axis])
    return Status::error(at + ": range [" + std::to_string(begin) + ", " +
                         std::to_string(begin + part->local[axis]) + ") exceeds axis " +
                         std::to_string(axis) + " of " + toString(whole->local));
  NarrowWork w;
  w.whole = whole->local;
  w.part = part->local;
  w.offset.assign(w.whole.size(), 0);
  w.offset[axis] = begin;
  w.n = elems(out[0]);
  return w;
}

StatusOr<ConcatWork> checkConcat(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at) {
  auto axisOr = checkAxisOp(task, in, out, at);
  if (!axisOr)
    return axisOr.status();
  const int axis = *axisOr;
  const TensorView *y = out[0];
  ConcatWork w;
  w.result = y->local;
  int64_t total = 0;
  for (const TensorView *t : in) {
    Shape offset(y->local.size(), 0);
    offset[axis] = total;
    total += t->local[axis];
    w.parts.push_back(t->local);
    w.offsets.push_back(std::move(offset));
  }
  if (total != y->local[axis])
    return Status::error(at + ": operands add up to " + std::to_string(total) + " along axis " +
                         std::to_string(axis) + ", the result has " +
                         std::to_string(y->local[axis]));
  return w;
}

StatusOr<ScalarWork> checkScalarOp(const plan::Task &task, const Operands &in, const Operands &out,
                                   const std::string &at) {
  if (elems(out[0]) != 1)
    return Status::error(at + ": the result must be a scalar");
  if (task.op() == K::SquareSum)
    return ScalarWork{elems(in[0]), 0.0f};
  if (elems(in[0]) != 1 || !task.attrs_as_ClipAttrs())
    return Status::error(at + ": clip_scale takes a scalar and max_norm");
  return ScalarWork{1, task.attrs_as_ClipAttrs()->max_norm()};
}

} // namespace sbpflow

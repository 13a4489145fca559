// Ops that move elements without arithmetic: reshape, transpose, narrow (and
// its gradient) and concat. Reshape, narrow and concat are region copies of
// the Device, for elements of any type; transpose has a kernel per device.
#include "kernels/Checks.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/plan/PlanTypes.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Data.h"
#include "kernels/cuda/Dispatch.h"
#endif

#include <memory>

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// A block of a local tensor of shape `shape` starting at `begin`, as a
// Region (the Device's region copies take regions).
Region block(const Shape &shape, const Shape &begin) {
  Region r;
  for (size_t d = 0; d < shape.size(); ++d)
    r.push_back(Chunk{begin.empty() ? 0 : begin[d], shape[d]});
  return r;
}

struct TransposeWork {
  Shape shape; // the input's
  std::vector<int> perm;
};

StatusOr<TransposeWork> transposeWork(const OpArgs &a) {
  const auto *perm = a.task.attrs_as_TransposeAttrs()->perm();
  const TensorView &x = *a.in[0], &y = *a.out[0];
  const int rank = static_cast<int>(x.global.size());
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  bool valid = static_cast<int>(perm->size()) == rank && static_cast<int>(y.global.size()) == rank;
  for (int k = 0; valid && k < rank; ++k) {
    const int from = perm->Get(k);
    valid = from >= 0 && from < rank && !seen[from] && y.global[k] == x.global[from];
    if (valid)
      seen[from] = true;
  }
  if (!valid)
    return Status::error(a.at + ": TransposeAttrs.perm is not a permutation taking " +
                         toString(x.global) + " to " + toString(y.global));
  TransposeWork w;
  w.shape = x.local;
  for (int k = 0; k < rank; ++k) {
    const int from = perm->Get(k);
    if (y.local[k] != x.local[from])
      return Status::error(a.at + ": " + toString(y.local) + " is not a permutation of " +
                           toString(x.local));
    w.perm.push_back(from);
  }
  return w;
}

// Narrow copies `part` out of `whole` at `offset`; NarrowGrad zeroes `whole`
// and copies `part` back in.
struct NarrowWork {
  Shape whole, part, offset;
};

// Narrow, NarrowGrad and Concat work along an axis no rank splits, so the
// local tensors are narrowed or joined exactly as the global ones.
Status unsplitAxis(const OpArgs &a, int axis) {
  for (const Operands *list : {&a.in, &a.out})
    for (const TensorView *t : *list)
      if (t->local[axis] != t->global[axis])
        return Status::error(a.at + ": axis " + std::to_string(axis) + " is split across ranks");
  return Status::ok();
}

StatusOr<NarrowWork> narrowWork(const OpArgs &a) {
  const plan::NarrowAttrs *attrs = a.task.attrs_as_NarrowAttrs();
  // Narrow: whole = in0, part = out0; NarrowGrad the other way round.
  const TensorView *whole = a.task.op() == K::Narrow ? a.in[0] : a.out[0];
  const TensorView *part = a.task.op() == K::Narrow ? a.out[0] : a.in[0];
  const int rank = static_cast<int>(whole->global.size()), axis = attrs->axis();
  const int64_t begin = attrs->begin();
  bool valid =
      static_cast<int>(part->global.size()) == rank && axis >= 0 && axis < rank && begin >= 0;
  for (int d = 0; valid && d < rank; ++d)
    valid = d == axis ? begin + part->global[d] <= whole->global[d]
                      : part->global[d] == whole->global[d];
  if (!valid)
    return Status::error(a.at + ": NarrowAttrs (axis " + std::to_string(axis) + ", begin " +
                         std::to_string(begin) + ") do not place " + toString(part->global) +
                         " inside " + toString(whole->global));
  if (Status s = unsplitAxis(a, axis); !s)
    return s;
  for (int d = 0; d < rank; ++d)
    if (d != axis && part->local[d] != whole->local[d])
      return Status::error(a.at + ": " + toString(part->local) + " and " + toString(whole->local) +
                           " differ off the axis");
  NarrowWork w{whole->local, part->local, Shape(static_cast<size_t>(rank), 0)};
  w.offset[axis] = begin;
  return w;
}

// Concat copies input i into the result at offsets[i].
struct ConcatWork {
  Shape result;
  std::vector<Shape> parts, offsets;
};

StatusOr<ConcatWork> concatWork(const OpArgs &a) {
  const TensorView *y = a.out[0];
  const int axis = a.task.attrs_as_ConcatAttrs()->axis(), rank = static_cast<int>(y->global.size());
  if (axis < 0 || axis >= rank)
    return Status::error(a.at + ": ConcatAttrs.axis " + std::to_string(axis) +
                         " out of range for rank " + std::to_string(rank));
  int64_t total = 0;
  for (const TensorView *t : a.in) {
    bool valid = static_cast<int>(t->global.size()) == rank;
    for (int d = 0; valid && d < rank; ++d)
      valid = d == axis || t->global[d] == y->global[d];
    if (!valid)
      return Status::error(a.at + ": operand '" + t->name + "' " + toString(t->global) +
                           " does not fit the result " + toString(y->global) + " off axis " +
                           std::to_string(axis));
    total += t->global[axis];
  }
  if (total != y->global[axis])
    return Status::error(a.at + ": operands sum to " + std::to_string(total) + " on axis " +
                         std::to_string(axis) + ", the result has " +
                         std::to_string(y->global[axis]));
  if (Status s = unsplitAxis(a, axis); !s)
    return s;
  ConcatWork w;
  w.result = y->local;
  int64_t offset = 0;
  for (const TensorView *t : a.in) {
    for (int d = 0; d < rank; ++d)
      if (d != axis && t->local[d] != y->local[d])
        return Status::error(a.at + ": " + toString(t->local) + " and " + toString(y->local) +
                             " differ off the axis");
    Shape begin(static_cast<size_t>(rank), 0);
    begin[axis] = offset;
    offset += t->local[axis];
    w.parts.push_back(t->local);
    w.offsets.push_back(std::move(begin));
  }
  return w;
}

Status reshapeCheck(const OpArgs &a) {
  if (elementCount(a.in[0]->global) != elementCount(a.out[0]->global))
    return Status::error(a.at + ": reshape of " + toString(a.in[0]->global) + " into " +
                         toString(a.out[0]->global) + " changes the element count");
  return sameSize({a.in[0], a.out[0]}, a.at);
}

StatusOr<Kernel> buildReshape(const OpArgs &a) {
  if (Status s = reshapeCheck(a); !s)
    return s;
  // Any element type: the bytes move as they are.
  const size_t bytes = static_cast<size_t>(elements(a.out[0])) * dtypeSize(a.out[0]->dtype);
  return Kernel(
      [=, x = a.in[0]->data, y = a.out[0]->data, device = a.device, stream = a.stream,
       at = a.at](const StepContext &) { return named(at, device->copy(y, x, bytes, stream)); });
}

StatusOr<Kernel> buildNarrow(const OpArgs &a) {
  auto w = narrowWork(a);
  if (!w)
    return w.status();
  const Region whole = block(w->whole, {}), part = block(w->part, w->offset);
  const size_t bytes = dtypeSize(a.out[0]->dtype);
  const plan::DType dtype = a.out[0]->dtype;
  const int64_t n = elements(a.out[0]);
  const bool forward = a.task.op() == K::Narrow;
  return Kernel([=, x = a.in[0]->data, y = a.out[0]->data, device = a.device, stream = a.stream,
                 at = a.at](const StepContext &) -> Status {
    if (forward)
      return named(at, device->packRegion(x, whole, part, y, bytes, stream));
    // Zero bits are 0 in f32, bf16 and i32 alike.
    if (Status s = device->fill(y, dtype, 0.0f, n, stream); !s)
      return s.withContext(at);
    return named(at, device->unpackRegion(x, part, y, whole, bytes, stream));
  });
}

StatusOr<Kernel> buildConcat(const OpArgs &a) {
  auto w = concatWork(a);
  if (!w)
    return w.status();
  const Region result = block(w->result, {});
  std::vector<std::pair<const void *, Region>> parts;
  for (size_t i = 0; i < a.in.size(); ++i)
    parts.emplace_back(a.in[i]->data, block(w->parts[i], w->offsets[i]));
  const size_t bytes = dtypeSize(a.out[0]->dtype);
  return Kernel([=, y = a.out[0]->data, device = a.device, stream = a.stream,
                 at = a.at](const StepContext &) -> Status {
    for (const auto &[x, part] : parts)
      if (Status s = device->unpackRegion(x, part, y, result, bytes, stream); !s)
        return s.withContext(at);
    return Status::ok();
  });
}

} // namespace

Status checkReshape(const OpArgs &a) { return reshapeCheck(a); }
Status checkTranspose(const OpArgs &a) { return statusOf(transposeWork(a)); }
Status checkNarrow(const OpArgs &a) { return statusOf(narrowWork(a)); }
Status checkNarrowGrad(const OpArgs &a) { return statusOf(narrowWork(a)); }
Status checkConcat(const OpArgs &a) { return statusOf(concatWork(a)); }

StatusOr<Kernel> cpuReshape(const OpArgs &a) { return buildReshape(a); }
StatusOr<Kernel> cpuNarrow(const OpArgs &a) { return buildNarrow(a); }
StatusOr<Kernel> cpuNarrowGrad(const OpArgs &a) { return buildNarrow(a); }
StatusOr<Kernel> cpuConcat(const OpArgs &a) { return buildConcat(a); }

StatusOr<Kernel> cpuTranspose(const OpArgs &args) {
  // The f32 kernel moves any 4-byte element; bf16 through f32.
  return checkedF32(args, transposeWork, [](const OpArgs &a, TransposeWork w) {
    auto t = std::make_shared<const TransposeWork>(std::move(w));
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] {
      cpu::transpose(x, y, t->shape.data(), t->perm.data(), static_cast<int>(t->perm.size()));
    });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

StatusOr<Kernel> cudaReshape(const OpArgs &a) { return buildReshape(a); }
StatusOr<Kernel> cudaNarrow(const OpArgs &a) { return buildNarrow(a); }
StatusOr<Kernel> cudaNarrowGrad(const OpArgs &a) { return buildNarrow(a); }
StatusOr<Kernel> cudaConcat(const OpArgs &a) { return buildConcat(a); }

StatusOr<Kernel> cudaTranspose(const OpArgs &a) {
  auto w = transposeWork(a);
  if (!w)
    return w.status();
  auto t = std::make_shared<const TransposeWork>(w.take());
  return cuda::withStorageType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=, s = cuda::streamOf(a.stream)] {
      return cuda::transpose<T>(x, y, t->shape.data(), t->perm.data(),
                                static_cast<int>(t->perm.size()), s);
    });
  });
}

#endif

} // namespace sbpflow::ops

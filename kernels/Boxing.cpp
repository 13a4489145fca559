// Boxing at runtime, written once over the Device and a typed Communicator:
// all-reduce (several tensors form one bucket), all-gather, reduce-scatter
// and all-to-all between the members of one hierarchy dimension, and the
// local steps slice (B -> S) and zero-others (B -> P). Data moves in its own
// type (bf16 as 2 bytes); a reduction of bf16 tensors runs in f32 (withF32)
// so that it rounds once. Each member's part of a tensor is a region in
// global coordinates, packed and unpacked around the collective.
#include "kernels/Checks.h"
#include "kernels/Codecs.h"
#include "runtime/comm/Communicator.h"
#include "runtime/plan/PlanTypes.h"

#include <memory>

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// Whether a boxing op changes `from` into `to` on one hierarchy dimension
// (the collective of each SBP change); `reduce` is the reduction a partial
// input must carry.
bool boxingChange(K op, SbpDim from, SbpDim to, plan::ReduceOp reduce) {
  const bool partial = from.kind >= SbpKind::PartialSum;
  const SbpKind want = reduce == plan::ReduceOp::Max   ? SbpKind::PartialMax
                       : reduce == plan::ReduceOp::Min ? SbpKind::PartialMin
                                                       : SbpKind::PartialSum;
  switch (op) {
  case K::AllReduce:
    return partial && from.kind == want && to.kind == SbpKind::Broadcast;
  case K::AllGather:
    return from.kind == SbpKind::Split && to.kind == SbpKind::Broadcast;
  case K::ReduceScatter:
    return partial && from.kind == want && to.kind == SbpKind::Split;
  case K::AllToAll:
    return from.kind == SbpKind::Split && to.kind == SbpKind::Split && from.axis != to.axis;
  case K::Slice:
    return from.kind == SbpKind::Broadcast && to.kind == SbpKind::Split;
  case K::ZeroOthers:
    return from.kind == SbpKind::Broadcast && to.kind >= SbpKind::PartialSum;
  default:
    return false;
  }
}

// Every boxing task: each output is its input on the same placement and
// shape, its nd-SBP changed on the task's hierarchy dimension only (on any
// dimension for a local step without attributes), by the change of its op,
// and a reduction reduces what the input's SBP says. On a dimension of one
// rank every SBP holds the whole tensor: any change is a copy.
Status checkBoxing(const OpArgs &a) {
  const plan::CollectiveAttrs *c = a.task.attrs_as_CollectiveAttrs();
  const int dims = static_cast<int>(a.in[0]->hierarchy.size());
  if (c && (c->hierarchy_dim() < 0 || c->hierarchy_dim() >= dims))
    return Status::error(a.at + ": hierarchy_dim " + std::to_string(c->hierarchy_dim()) +
                         " out of range (placement has " + std::to_string(dims) + " dimensions)");
  if (c && (static_cast<int>(c->reduce()) < static_cast<int>(plan::ReduceOp::MIN) ||
            c->reduce() > plan::ReduceOp::MAX))
    return Status::error(a.at + ": unknown reduction " +
                         std::to_string(static_cast<int>(c->reduce())));
  const plan::ReduceOp reduce = c ? c->reduce() : plan::ReduceOp::Sum;
  if (a.task.op() == K::AllReduce && a.in.size() != a.out.size())
    return Status::error(a.at + ": AllReduce needs as many outputs as inputs");
  for (size_t i = 0; i < a.in.size() && i < a.out.size(); ++i) {
    const TensorView &x = *a.in[i], &y = *a.out[i];
    if (x.placement != y.placement || x.global != y.global)
      return Status::error(a.at + ": '" + y.name + "' is not '" + x.name +
                           "' on another SBP (placement or shape differ)");
    for (size_t d = 0; d < x.sbp.size(); ++d) {
      if (x.hierarchy[d] == 1)
        continue;
      const SbpDim from = x.sbp[d], to = y.sbp[d];
      const bool here = c ? static_cast<int>(d) == c->hierarchy_dim() : from != to;
      if (here ? boxingChange(a.task.op(), from, to, reduce) : from == to)
        continue;
      return Status::error(
          a.at + ": '" + x.name + "' " + toString(x.sbp) + " -> '" + y.name + "' " +
          toString(y.sbp) +
          (here ? " is not what " + std::string(opName(a.task.op())) +
                      (c ? " with reduce " + std::string(plan::EnumNameReduceOp(reduce))
                         : std::string()) +
                      " does on hierarchy dim " + std::to_string(d) + " (" + toString(from) +
                      " -> " + toString(to) + ")"
                : " changes hierarchy dim " + std::to_string(d) +
                      ", which the task does not act on"));
    }
  }
  return Status::ok();
}

ReduceOp reduceOf(const plan::Task &task) {
  switch (task.attrs_as_CollectiveAttrs()->reduce()) {
  case plan::ReduceOp::Max:
    return ReduceOp::Max;
  case plan::ReduceOp::Min:
    return ReduceOp::Min;
  default:
    return ReduceOp::Sum;
  }
}

// AllReduce of in[i] into out[i] (the same element type for all, Ops.def),
// bucketed: one collective over a packed copy when there are several.
StatusOr<Kernel> buildAllReduce(const OpArgs &a) {
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (size_t i = 0; i < a.in.size(); ++i) {
    if (elements(a.in[i]) != elements(a.out[i]))
      return Status::error(a.at + ": input and output " + std::to_string(i) +
                           " differ in local size");
    counts.push_back(elements(a.in[i]));
    total += counts.back();
  }
  const plan::DType type = a.in[0]->dtype;
  const size_t bytes = dtypeSize(type);
  std::vector<std::pair<const uint8_t *, uint8_t *>> pairs;
  for (size_t i = 0; i < a.in.size(); ++i)
    pairs.emplace_back(static_cast<const uint8_t *>(a.in[i]->data),
                       static_cast<uint8_t *>(a.out[i]->data));
  Communicator *group = a.comm;
  Device *device = a.device;
  const Stream stream = a.stream;
  const ReduceOp op = reduceOf(a.task);
  if (group && pairs.size() > 1) {
    // A bucket: each collective costs round trips (Gloo) or a launch (NCCL).
    auto *buf = static_cast<uint8_t *>(a.scratch(static_cast<size_t>(total) * bytes));
    return Kernel([=, at = a.at](const StepContext &) -> Status {
      Status s;
      for (size_t i = 0, off = 0; s && i < pairs.size(); off += counts[i] * bytes, ++i)
        s = device->copy(buf + off, pairs[i].first, counts[i] * bytes, stream);
      if (s)
        s = group->allReduce(buf, total, type, op);
      for (size_t i = 0, off = 0; s && i < pairs.size(); off += counts[i] * bytes, ++i)
        s = device->copy(pairs[i].second, buf + off, counts[i] * bytes, stream);
      return named(at, s);
    });
  }
  return Kernel([=, at = a.at](const StepContext &) -> Status {
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (Status s = device->copy(pairs[i].second, pairs[i].first, counts[i] * bytes, stream); !s)
        return s.withContext(at);
      if (group && counts[i] > 0)
        if (Status s = group->allReduce(pairs[i].second, counts[i], type, op); !s)
          return s.withContext(at);
    }
    return Status::ok();
  });
}

// AllGather, ReduceScatter, AllToAll over the `n` members of hierarchy dim
// `dim`: sendParts[r] is the part of my input member r needs, recvParts[r]
// what r sends me, in global coordinates.
struct ExchangeWork {
  int64_t n = 0;
  bool copyOnly = false; // a group of one: the output is the input
  std::vector<Region> sendParts, recvParts;
  std::vector<int64_t> sendCounts, recvCounts;
  int64_t sendTotal = 0, recvTotal = 0; // packing buffer sizes
};

ExchangeWork exchangeWork(const OpArgs &a) {
  const TensorView &x = *a.in[0], &y = *a.out[0];
  ExchangeWork w;
  const int dim = a.task.attrs_as_CollectiveAttrs()->hierarchy_dim();
  const int64_t n = w.n = x.hierarchy[dim];
  w.copyOnly = n == 1 && x.region == y.region;
  if (w.copyOnly)
    return w;
  // Regions of every group member, in global coordinates.
  std::vector<Region> inOf(n), outOf(n);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<int64_t> coord = x.coord;
    coord[dim] = r;
    inOf[r] = localRegion(x.global, x.sbp, x.hierarchy, coord);
    outOf[r] = localRegion(y.global, y.sbp, y.hierarchy, coord);
  }
  const int64_t me = x.coord[dim];
  w.sendParts.resize(n);
  w.recvParts.resize(n);
  w.sendCounts.resize(n);
  w.recvCounts.resize(n);
  const K op = a.task.op();
  for (int64_t r = 0; r < n; ++r) {
    if (op == K::AllGather) {
      w.sendParts[r] = inOf[me];
      w.recvParts[r] = inOf[r];
    } else if (op == K::ReduceScatter) {
      w.sendParts[r] = outOf[r];
      w.recvParts[r] = outOf[me];
    } else {
      w.sendParts[r] = intersect(inOf[me], outOf[r]);
      w.recvParts[r] = intersect(inOf[r], outOf[me]);
    }
    w.sendCounts[r] = regionElements(w.sendParts[r]);
    w.recvCounts[r] = regionElements(w.recvParts[r]);
  }
  for (int64_t r = 0; r < n; ++r) {
    w.sendTotal += op == K::AllGather ? (r == 0 ? w.sendCounts[0] : 0) : w.sendCounts[r];
    w.recvTotal += op == K::ReduceScatter ? (r == 0 ? w.recvCounts[0] : 0) : w.recvCounts[r];
  }
  return w;
}

StatusOr<Kernel> buildExchange(const OpArgs &a) {
  const plan::DType type = a.in[0]->dtype;
  const size_t bytes = dtypeSize(type);
  const void *src = a.in[0]->data;
  void *dst = a.out[0]->data;
  Device *device = a.device;
  const Stream stream = a.stream;
  auto w = std::make_shared<const ExchangeWork>(exchangeWork(a));
  if (w->copyOnly) {
    // A group of one: the output is the input (one copy, not pack + unpack).
    const size_t count = static_cast<size_t>(elements(a.out[0])) * bytes;
    return Kernel([=, at = a.at](const StepContext &) {
      return named(at, device->copy(dst, src, count, stream));
    });
  }
  // Packing buffers: fixed when the executor is built, so steps allocate
  // nothing.
  auto *sb = static_cast<uint8_t *>(a.scratch(static_cast<size_t>(w->sendTotal) * bytes));
  auto *rb = static_cast<uint8_t *>(a.scratch(static_cast<size_t>(w->recvTotal) * bytes));
  const Region inRegion = a.in[0]->region, outRegion = a.out[0]->region;
  Communicator *group = a.comm;
  const ReduceOp op = reduceOf(a.task);
  const K kind = a.task.op();
  return Kernel([=, at = a.at](const StepContext &) -> Status {
    Status s;
    if (kind == K::AllGather) {
      s = device->packRegion(src, inRegion, w->sendParts[0], sb, bytes, stream);
    } else {
      int64_t off = 0;
      for (int64_t r = 0; s && r < w->n; ++r) {
        s = device->packRegion(src, inRegion, w->sendParts[r], sb + off * bytes, bytes, stream);
        off += w->sendCounts[r];
      }
    }
    if (!s) {
    } else if (!group) {
      s = device->copy(rb, sb, static_cast<size_t>(w->recvTotal) * bytes, stream);
    } else if (kind == K::AllGather) {
      s = group->allGather(sb, rb, w->recvCounts.data(), type);
    } else if (kind == K::ReduceScatter) {
      s = group->reduceScatter(sb, rb, w->sendCounts.data(), type, op);
    } else {
      s = group->allToAll(sb, w->sendCounts.data(), rb, w->recvCounts.data(), type);
    }
    if (s && kind == K::ReduceScatter) {
      s = device->unpackRegion(rb, w->recvParts[0], dst, outRegion, bytes, stream);
    } else if (s) {
      int64_t off = 0;
      for (int64_t r = 0; s && r < w->n; ++r) {
        s = device->unpackRegion(rb + off * bytes, w->recvParts[r], dst, outRegion, bytes, stream);
        off += w->recvCounts[r];
      }
    }
    return named(at, s);
  });
}

StatusOr<Kernel> buildSlice(const OpArgs &a) {
  const TensorView &x = *a.in[0], &y = *a.out[0];
  if (regionElements(intersect(x.region, y.region)) != regionElements(y.region))
    return Status::error(a.at + ": output region is not inside the input region");
  const size_t bytes = dtypeSize(x.dtype);
  return Kernel([=, src = x.data, dst = y.data, from = x.region, part = y.region, device = a.device,
                 stream = a.stream, at = a.at](const StepContext &) {
    return named(at, device->packRegion(src, from, part, dst, bytes, stream));
  });
}

// One member of each partial-sum group keeps the value, the others hold 0.
StatusOr<Kernel> buildZeroOthers(const OpArgs &a) {
  const TensorView &x = *a.in[0], &y = *a.out[0];
  bool keep = true;
  for (size_t d = 0; d < y.sbp.size(); ++d) {
    const bool partialOut = y.sbp[d].kind >= SbpKind::PartialSum;
    const bool partialIn = x.sbp[d].kind >= SbpKind::PartialSum;
    if (partialOut && !partialIn && y.coord[d] != 0)
      keep = false;
  }
  if (elements(&x) != elements(&y))
    return Status::error(a.at + ": input and output differ in local size");
  const int64_t n = elements(&y);
  const plan::DType dtype = y.dtype;
  return Kernel([=, src = x.data, dst = y.data, device = a.device, stream = a.stream,
                 at = a.at](const StepContext &) {
    // Zero bits are 0 in f32, bf16 and i32 alike.
    if (!keep)
      return named(at, device->fill(dst, dtype, 0.0f, n, stream));
    return named(at, device->copy(dst, src, static_cast<size_t>(n) * dtypeSize(dtype), stream));
  });
}

// A reduction of bf16 tensors sums in f32 and rounds once.
StatusOr<Kernel> reducing(const OpArgs &a, KernelBuilder build) {
  return withF32(a, [build](const OpArgs &f32) { return build(f32); });
}

} // namespace

Status checkAllReduce(const OpArgs &a) {
  Status s = checkBoxing(a);
  return s && hasCodec(a.task) ? checkCodec(a) : s;
}
Status checkAllGather(const OpArgs &a) { return checkBoxing(a); }
Status checkReduceScatter(const OpArgs &a) { return checkBoxing(a); }
Status checkAllToAll(const OpArgs &a) { return checkBoxing(a); }
Status checkSlice(const OpArgs &a) { return checkBoxing(a); }
Status checkZeroOthers(const OpArgs &a) { return checkBoxing(a); }

StatusOr<Kernel> cpuAllReduce(const OpArgs &a) {
  return hasCodec(a.task) ? cpuCompressedAllReduce(a) : reducing(a, buildAllReduce);
}
StatusOr<Kernel> cpuAllGather(const OpArgs &a) { return buildExchange(a); }
StatusOr<Kernel> cpuReduceScatter(const OpArgs &a) { return reducing(a, buildExchange); }
StatusOr<Kernel> cpuAllToAll(const OpArgs &a) { return buildExchange(a); }
StatusOr<Kernel> cpuSlice(const OpArgs &a) { return buildSlice(a); }
StatusOr<Kernel> cpuZeroOthers(const OpArgs &a) { return buildZeroOthers(a); }

#ifdef SBPFLOW_HAVE_CUDA
// The CPU's builders: they work through the Device and the Communicator,
// whichever the executor's are.
StatusOr<Kernel> cudaAllReduce(const OpArgs &a) {
  return hasCodec(a.task) ? cudaCompressedAllReduce(a) : reducing(a, buildAllReduce);
}
StatusOr<Kernel> cudaAllGather(const OpArgs &a) { return cpuAllGather(a); }
StatusOr<Kernel> cudaReduceScatter(const OpArgs &a) { return cpuReduceScatter(a); }
StatusOr<Kernel> cudaAllToAll(const OpArgs &a) { return cpuAllToAll(a); }
StatusOr<Kernel> cudaSlice(const OpArgs &a) { return cpuSlice(a); }
StatusOr<Kernel> cudaZeroOthers(const OpArgs &a) { return cpuZeroOthers(a); }
#endif

} // namespace sbpflow::ops

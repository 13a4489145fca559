// Compressed gradient all-reduces at runtime (plan.fbs CodecAttrs). Each
// rank encodes its partial gradient into a payload whose size the plan fixes
// (k from the density, codes from the bits), the group exchanges payloads
// (all-gathers of packed pairs or codes, PowerSGD's two small all-reduces,
// random-k's all-reduce of values at shared indices), and every rank decodes
// the same sum into its output. What a rank did not send stays in its state
// variables (error feedback), one row of [ranks, L] per rank, so checkpoints
// carry it and a resumed run continues bit for bit.
#include "kernels/Codecs.h"
#include "kernels/Checks.h"
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Quantize.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/comm/Communicator.h"
#include "runtime/plan/PlanTypes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>

namespace sbpflow::ops {

using plan::Codec;

bool hasCodec(const plan::Task &task) {
  const plan::CollectiveAttrs *c = task.attrs_as_CollectiveAttrs();
  return task.op() == plan::OpKind::AllReduce && c && c->codec();
}

int codecStateCount(Codec kind, float momentum, float beta2) {
  switch (kind) {
  case Codec::TopK:
  case Codec::TopK2Bit:
    return beta2 > 0.0f ? 3 : 1;
  case Codec::Sign:
    return momentum > 0.0f ? 2 : 1;
  case Codec::Dgc:
    return beta2 > 0.0f ? 3 : 2;
  case Codec::PowerSgd:
    return 2;
  case Codec::Edit:
    return 1;
  default:
    return 0;
  }
}

bool compressesAdamUpdate(Codec kind) {
  return kind == Codec::Dgc || kind == Codec::TopK || kind == Codec::TopK2Bit;
}

bool isSparseCodec(Codec kind) {
  return kind == Codec::TopK || kind == Codec::Dgc || kind == Codec::RandomK ||
         kind == Codec::TopK2Bit;
}

int64_t pairsFor(double density, int64_t n) {
  const auto k = static_cast<int64_t>(std::ceil(density * static_cast<double>(n)));
  return std::clamp<int64_t>(k, 1, std::max<int64_t>(n, 1));
}

Chunks::Chunks(double density, int64_t n, int64_t size) : n(n), size(size) {
  full = n / size;
  perFull = pairsFor(density, size);
  lastPairs = n > full * size ? pairsFor(density, n - full * size) : 0;
}

double dgcDensity(const plan::CodecAttrs &c, int64_t count) {
  if (c.epoch_steps() <= 0)
    return c.density();
  return cpu::dgcWarmupDensity(count / c.epoch_steps(), c.density());
}

void CodecExchange::takeUpdateBuffer(const OpArgs &a) {
  if (c->beta2() <= 0.0f)
    return;
  update = static_cast<float *>(a.scratch(4 * n));
  source = update;
}

void CodecExchange::setParameter(float value) {
  if (isSparseCodec(kind))
    k = pairsFor(value, n);
  else if (kind == Codec::Qsgd)
    bits = static_cast<int>(value), levels = (1 << (bits - 1)) - 1;
  else if (kind == Codec::PowerSgd)
    rank = static_cast<int>(value);
}

Status CodecTask::run() {
  CodecExchange &first = *parts.front();
  const int64_t count = *first.step, warmupSteps = first.c->warmup_steps();
  if (first.c->beta2() > 0.0f)
    for (const auto &x : parts)
      if (Status s = x->adamUpdate(count); !s)
        return s;
  if (count < warmupSteps) {
    if (Status s = warmup(); !s)
      return s;
  } else if (first.kind == Codec::PowerSgd) {
    if (Status s = powerSgd(count - warmupSteps); !s)
      return s;
  } else {
    if (Status s = first.prepare(count - warmupSteps); !s)
      return s;
    if (Status s = first.compressed(count - warmupSteps); !s)
      return s;
  }
  return countStep(first.step, first.counter);
}

Status CodecTask::warmup() {
  CodecExchange &first = *parts.front();
  if (parts.size() == 1) {
    if (Status s = first.copy(first.out, first.source, first.n); !s)
      return s;
    return first.sum(first.out, first.n);
  }
  int64_t at = 0;
  for (const auto &x : parts) {
    if (Status s = x->copy(dense + at, x->source, x->n); !s)
      return s;
    at += x->n;
  }
  if (Status s = first.sum(dense, at); !s)
    return s;
  at = 0;
  for (const auto &x : parts) {
    if (Status s = x->copy(x->out, dense + at, x->n); !s)
      return s;
    at += x->n;
  }
  return Status::ok();
}

// Each part's P and Q lie at its offset in p and q, at the ranks in use;
// Q's starting draws continue from one part to the next.
Status CodecTask::powerSgd(int64_t count) {
  CodecExchange &first = *parts.front();
  int64_t pn = 0, qn = 0;
  Status s = eachPart(pn, qn, [&](CodecExchange &x, int64_t pAt, int64_t qAt) {
    if (Status prepared = x.prepare(count); !prepared)
      return prepared;
    x.small = p + pAt;
    return x.powerSgdP(count, qAt);
  });
  if (s)
    s = first.sum(p, pn);
  if (s)
    s = eachPart(pn, qn,
                 [&](CodecExchange &x, int64_t, int64_t qAt) { return x.powerSgdQ(q + qAt); });
  if (s)
    s = first.sum(q, qn);
  if (s)
    s = eachPart(pn, qn,
                 [&](CodecExchange &x, int64_t, int64_t qAt) { return x.powerSgdOut(q + qAt); });
  return s;
}

int64_t CodecTask::elements() const {
  int64_t total = 0;
  for (const auto &x : parts)
    total += x->n;
  return total;
}

Status CodecTask::countOnly() { return countStep(parts.front()->step, parts.front()->counter); }

void CodecTask::takePowerSgdBuffers(const OpArgs &a) {
  int64_t pn = 0, qn = 0;
  for (const auto &x : parts) {
    pn += x->rows * x->rank;
    qn += x->cols * x->rank;
  }
  p = static_cast<float *>(a.scratch(4 * pn));
  q = static_cast<float *>(a.scratch(4 * qn));
  dense = static_cast<float *>(a.scratch(4 * elements()));
  int64_t at = 0;
  for (const auto &x : parts) {
    x->work = dense + at;
    at += x->n;
  }
}

int64_t CodecExchange::codeBytes() const {
  return kind == Codec::Qsgd ? cpu::qsgdPackedBytes(n, bits) : cpu::signCodeBytes(n);
}

int64_t CodecExchange::scaleCount() const { return cpu::bucketCount(n, c->bucket()); }

void CodecExchange::takeCodeBuffers(const OpArgs &a) {
  auto floats = [&](int64_t count) { return static_cast<float *>(a.scratch(4 * count)); };
  auto bytes = [&](int64_t count) { return static_cast<uint8_t *>(a.scratch(count)); };
  if (kind == Codec::Qsgd)
    codes = bytes(n);
  sendBytes = bytes(codeBytes());
  recvBytes = bytes(codeBytes() * ranks);
  small = floats(scaleCount());
  smallAll = floats(scaleCount() * ranks);
}

Status CodecExchange::compressed(int64_t count) {
  switch (kind) {
  case Codec::TopK:
    return topk();
  case Codec::Dgc:
    return dgc(count);
  case Codec::RandomK:
    return randomk(count);
  case Codec::Qsgd:
    return qsgd(count);
  case Codec::Sign:
    return sign();
  case Codec::PowerSgd:
    return Status::error("PowerSGD runs in its task's phases (CodecTask::powerSgd)");
  case Codec::TopK2Bit:
    return topk2bit();
  case Codec::Edit:
    return edit();
  }
  return Status::error("unknown codec " + std::to_string(static_cast<int>(kind)));
}

Status CodecExchange::sum(float *buf, int64_t count) {
  return group ? group->allReduce(buf, count, plan::DType::F32, ReduceOp::Sum) : Status::ok();
}

Status CodecExchange::bind(const OpArgs &a, int input) {
  c = a.task.attrs_as_CollectiveAttrs()->codec();
  kind = c->kind();
  n = elements(a.in[input]);
  if (n != elements(a.out[input]))
    return Status::error(a.at + ": input and output " + std::to_string(input) +
                         " differ in local size");
  const Shape &local = a.in[input]->local;
  cols = local.empty() ? 1 : local.back();
  rows = cols > 0 ? n / cols : 0;
  if (const plan::LgrecoAttrs *lg = c->lgreco()) {
    setParameter(*std::max_element(lg->candidates()->begin(), lg->candidates()->end()));
  } else {
    rank = c->rank();
    bits = c->bits();
    levels = kind == Codec::Qsgd ? (1 << (bits - 1)) - 1 : 0;
    if (isSparseCodec(kind))
      k = pairsFor(kind == Codec::Dgc ? dgcDensity(*c, 0) : c->density(), n);
    if (kind == Codec::TopK2Bit && c->chunk() > 0 && n > 0) {
      chunks = Chunks(c->density(), n, c->chunk());
      k = chunks.pairs();
    }
  }
  grad = source = data<float>(a.in[input]);
  out = data<float>(a.out[input]);
  group = a.comm;
  ranks = a.comm ? a.comm->size() : 1;
  me = a.comm ? a.comm->rank() : 0;
  counts.resize(static_cast<size_t>(ranks));
  step = static_cast<int32_t *>(a.hostVariable(c->step()));
  counter = "codec step counter '" + a.plan.variables()->Get(c->step())->name()->str() + "'";
  if (c->inner_steps() >= 0)
    innerSteps = static_cast<const int32_t *>(a.hostVariable(c->inner_steps()));
  // This rank's row of each [ranks, L] state variable: the codec's own,
  // then L-GreCo's accumulator.
  const int own = codecStateCount(kind, c->momentum(), c->beta2());
  const int first = input * codecStateCount(*c);
  for (int i = 0; i < codecStateCount(*c); ++i) {
    const TensorView &v = (*a.variables)[c->state()->Get(first + i)];
    const int64_t need = kind == Codec::PowerSgd && i == 1 ? cols * rank
                         : kind == Codec::Edit             ? cpu::kEditStateFloats
                                                           : n;
    if (elements(&v) < need)
      return Status::error(a.at + ": state variable '" + v.name + "' holds " +
                           std::to_string(elements(&v)) +
                           " elements on this rank, the codec needs " + std::to_string(need));
    (i == own ? acc : i == 0 ? s0 : i == 1 ? s1 : s2) = data<float>(&v);
  }
  return Status::ok();
}

namespace {

std::string describe(const plan::CodecAttrs &c) {
  std::string s = plan::EnumNameCodec(c.kind()) ? plan::EnumNameCodec(c.kind()) : "?";
  if (isSparseCodec(c.kind()))
    s += " density " + std::to_string(c.density());
  if (c.kind() == Codec::Qsgd)
    s += " bits " + std::to_string(c.bits());
  if (c.kind() == Codec::PowerSgd)
    s += " rank " + std::to_string(c.rank());
  if (c.chunk() > 0)
    s += " chunk " + std::to_string(c.chunk());
  if (c.decay() != 1.0f)
    s += " decay " + std::to_string(c.decay());
  if (c.temperature() != 0.0f)
    s += " temperature " + std::to_string(c.temperature());
  if (c.mean_over_senders())
    s += " mean over senders";
  if (c.step_weight() != 0.0f)
    s += " step weight " + std::to_string(c.step_weight());
  return s;
}

// L-GreCo's plan side: a family it adapts, candidates of that family, this
// layer's row inside the table, and the shared variables shaped for it.
Status checkLgreco(const plan::LgrecoAttrs &lg, Codec kind, int inputs,
                   const flatbuffers::Vector<flatbuffers::Offset<plan::Variable>> &vars,
                   const std::string &at) {
  if (kind != Codec::TopK && kind != Codec::TopK2Bit && kind != Codec::Qsgd &&
      kind != Codec::PowerSgd)
    return Status::error(at + ": L-GreCo adapts TopK, TopK2Bit, Qsgd or PowerSgd only");
  const int C = static_cast<int>(lg.candidates()->size());
  if (C < 1 || C > 127 || lg.default_index() < 0 || lg.default_index() >= C)
    return Status::error(at + ": L-GreCo needs 1 to 127 candidates and a default among them");
  for (float v : *lg.candidates()) {
    const bool integral = v == std::floor(v);
    const bool ok = isSparseCodec(kind)   ? v > 0.0f && v <= 1.0f
                    : kind == Codec::Qsgd ? integral && v >= 2.0f && v <= 8.0f
                                          : integral && v >= 1.0f;
    if (!ok)
      return Status::error(at + ": L-GreCo candidate " + std::to_string(v) +
                           " is no parameter of " + plan::EnumNameCodec(kind));
  }
  if (lg.layers() < 1 || lg.layer() < 0 || lg.layer() + inputs > lg.layers() || lg.every() < 1)
    return Status::error(at + ": L-GreCo needs 0 <= layer, layer + gradients (" +
                         std::to_string(inputs) + ") <= layers and every >= 1");
  const int nv = static_cast<int>(vars.size());
  auto expect = [&](int v, const char *what, plan::DType type, int64_t count) -> Status {
    if (v < 0 || v >= nv)
      return Status::error(at + ": L-GreCo " + what + " variable " + std::to_string(v) +
                           " out of range");
    const plan::Variable &var = *vars.Get(v);
    const NdSbp sbp = toNdSbp(var.sbp());
    const bool replicated =
        std::all_of(sbp.begin(), sbp.end(), [](SbpDim d) { return d.kind == SbpKind::Broadcast; });
    if (var.dtype() != type || elementCount(toShape(var.shape())) != count || !replicated)
      return Status::error(at + ": L-GreCo " + what + " variable '" + var.name()->str() +
                           "' must be " + plan::EnumNameDType(type) + " of " +
                           std::to_string(count) + " elements, broadcast");
    return Status::ok();
  };
  const int64_t layers = lg.layers();
  if (Status s = expect(lg.errors(), "errors", plan::DType::F32, layers * 2 * C); !s)
    return s;
  if (Status s = expect(lg.choice(), "choice", plan::DType::I32, layers); !s)
    return s;
  if (Status s = expect(lg.previous(), "previous", plan::DType::I32, layers); !s)
    return s;
  return expect(lg.pending(), "pending", plan::DType::I32, 1);
}
} // namespace

Status checkCodec(const OpArgs &a) {
  const plan::CollectiveAttrs &attrs = *a.task.attrs_as_CollectiveAttrs();
  const plan::CodecAttrs &c = *attrs.codec();
  if (c.kind() < Codec::MIN || c.kind() > Codec::MAX)
    return Status::error(a.at + ": unknown codec " + std::to_string(static_cast<int>(c.kind())));
  const std::string at = a.at + ": codec " + describe(c);
  const int inputs = static_cast<int>(a.in.size());
  if (inputs < 1 || a.out.size() != a.in.size() || (inputs > 1 && c.kind() != Codec::PowerSgd))
    return Status::error(at +
                         ": a compressed all-reduce takes one gradient (several only under "
                         "PowerSGD), not " +
                         std::to_string(inputs));
  for (int j = 0; j < inputs; ++j)
    if (a.in[j]->dtype != plan::DType::F32 || a.out[j]->dtype != plan::DType::F32)
      return Status::error(at + ": the gradient '" + a.in[j]->name + "' must be f32");
  if (attrs.reduce() != plan::ReduceOp::Sum)
    return Status::error(at + ": a compressed all-reduce sums (reduce is " +
                         plan::EnumNameReduceOp(attrs.reduce()) + ")");
  if (isSparseCodec(c.kind()) && !(c.density() > 0.0f && c.density() <= 1.0f))
    return Status::error(at + ": density must lie in (0, 1]");
  if (c.kind() == Codec::Qsgd && (c.bits() < 2 || c.bits() > 8 || c.bucket() < 1))
    return Status::error(at + ": QSGD needs 2 <= bits <= 8 and a positive bucket, got bits " +
                         std::to_string(c.bits()) + " bucket " + std::to_string(c.bucket()));
  if (c.kind() == Codec::PowerSgd && c.rank() < 1)
    return Status::error(at + ": PowerSGD's rank must be positive, got " +
                         std::to_string(c.rank()));
  if (c.kind() == Codec::Sign && c.bucket() < 1)
    return Status::error(at + ": sign needs a positive bucket, got " + std::to_string(c.bucket()));
  if (!(c.momentum() >= 0.0f && c.momentum() < 1.0f && c.clip() >= 0.0f))
    return Status::error(at + ": needs momentum in [0, 1) and clip >= 0");
  if ((c.beta2() != 0.0f || c.eps() != 0.0f) &&
      (!compressesAdamUpdate(c.kind()) || !(c.beta2() > 0.0f && c.beta2() < 1.0f) ||
       !(c.eps() > 0.0f)))
    return Status::error(at +
                         ": beta2 and eps are DGC's and top-k's under AdamW (0 < beta2 < 1, "
                         "eps > 0), got beta2 " +
                         std::to_string(c.beta2()) + " eps " + std::to_string(c.eps()));
  const bool adam = c.beta2() > 0.0f;
  if ((c.momentum() > 0.0f && c.kind() != Codec::Dgc && c.kind() != Codec::Sign && !adam) ||
      (c.clip() > 0.0f && c.kind() != Codec::Dgc && c.kind() != Codec::Edit && !adam))
    return Status::error(at + ": only DGC and sign keep a momentum, and only DGC and Edit clip "
                              "(and top-k under AdamW)");
  if (c.temperature() != 0.0f && (c.kind() != Codec::Edit || !(c.temperature() > 0.0f)))
    return Status::error(at + ": temperature is Edit's (positive, or 0 for equal weights), got " +
                         std::to_string(c.temperature()));
  if (c.warmup_steps() < 0 || c.epoch_steps() < 0)
    return Status::error(at + ": warmup_steps and epoch_steps must not be negative");
  if (c.mean_over_senders() && (c.kind() != Codec::TopK2Bit || c.lgreco()))
    return Status::error(at + ": mean_over_senders is TopK2Bit's without L-GreCo");
  if ((c.chunk() != 0 || c.decay() != 1.0f) &&
      (c.kind() != Codec::TopK2Bit || c.chunk() < 0 || c.chunk() > 65536 ||
       !(c.decay() > 0.0f && c.decay() <= 1.0f) || c.lgreco()))
    return Status::error(at +
                         ": chunk and decay are TopK2Bit's without L-GreCo (0 <= chunk <= "
                         "65536, 0 < decay <= 1), got chunk " +
                         std::to_string(c.chunk()) + " decay " + std::to_string(c.decay()));

  const auto *vars = a.plan.variables();
  const int nv = static_cast<int>(vars->size());
  const int want = codecStateCount(c) * inputs;
  const int got = c.state() ? static_cast<int>(c.state()->size()) : 0;
  if (got != want)
    return Status::error(at + " keeps " + std::to_string(want) +
                         " state variables, the task names " + std::to_string(got));
  for (int i = 0; i < got; ++i) {
    const TensorView &g = *a.in[i / codecStateCount(c)];
    int64_t placementRanks = 1;
    for (int64_t h : g.hierarchy)
      placementRanks *= h;
    const int v = c.state()->Get(i);
    if (v < 0 || v >= nv)
      return Status::error(at + ": state variable " + std::to_string(v) +
                           " out of range (plan has " + std::to_string(nv) + " variables)");
    const plan::Variable &var = *vars->Get(v);
    const Shape shape = toShape(var.shape());
    const NdSbp sbp = toNdSbp(var.sbp());
    bool rowPerRank = shape.size() == 2 && shape[0] == placementRanks &&
                      static_cast<int64_t>(var.placement()) == g.placement &&
                      sbp.size() == g.hierarchy.size();
    for (const SbpDim &d : sbp)
      rowPerRank = rowPerRank && d.kind == SbpKind::Split && d.axis == 0;
    if (var.dtype() != plan::DType::F32 || !rowPerRank)
      return Status::error(at + ": state variable '" + var.name()->str() + "' must be f32 [" +
                           std::to_string(placementRanks) +
                           ", L] on the gradient's placement, split S(0) on every dimension (" +
                           "one row per rank); it is " + toString(shape) + " " + toString(sbp));
  }
  // A counter the codec reads: an i32 scalar variable.
  auto i32Scalar = [&](int v, const char *what) {
    const plan::Variable &var = *vars->Get(v);
    if (var.dtype() != plan::DType::I32 || elementCount(toShape(var.shape())) != 1)
      return Status::error(at + ": " + what + " variable '" + var.name()->str() +
                           "' must be an i32 scalar");
    return Status::ok();
  };
  if (c.step() < 0 || c.step() >= nv)
    return Status::error(at + ": step variable " + std::to_string(c.step()) + " out of range");
  if (Status s = i32Scalar(c.step(), "step"); !s)
    return s;
  // A-EDiT's step weights read each rank's inner steps.
  if (c.step_weight() != 0.0f || c.inner_steps() != -1) {
    if (c.kind() != Codec::Edit || !(c.step_weight() > 0.0f && c.step_weight() <= 1.0f))
      return Status::error(at + ": step_weight is Edit's (A-EDiT's ratio, in (0, 1]), got " +
                           std::to_string(c.step_weight()));
    if (c.inner_steps() < 0 || c.inner_steps() >= nv)
      return Status::error(at + ": step_weight " + std::to_string(c.step_weight()) +
                           " needs an inner_steps variable, got " +
                           std::to_string(c.inner_steps()));
    if (Status s = i32Scalar(c.inner_steps(), "inner_steps"); !s)
      return s;
  }
  return c.lgreco() ? checkLgreco(*c.lgreco(), c.kind(), inputs, *vars, at) : Status::ok();
}

namespace {

// One rank's compressed all-reduce: its tensors, state, scratch and group.
struct Exchange : CodecExchange {
  // Scratch, fixed when the kernel is built.
  int32_t *order = nullptr;
  // L-GreCo (CodecAttrs.lgreco): this part's row (the task's first plus the
  // part's index) and the shared table.
  const plan::LgrecoAttrs *lg = nullptr;
  int layer = 0;
  const flatbuffers::Vector<float> *candidates = nullptr; // the plan's
  float *table = nullptr; // [layers, 2 * candidates]: errors, then payload bytes
  int32_t *choice = nullptr, *previous = nullptr, *pending = nullptr;
  float *powerP = nullptr, *powerQ = nullptr; // measuring scratch
  std::vector<double> dp;                     // cpu::lgrecoChoose's scratch
  std::vector<int8_t> picks;                  // [layers, units + 1]

  Status gather(const void *send, void *recv, int64_t count, plan::DType type) {
    if (!group) {
      std::memcpy(recv, send, static_cast<size_t>(count) * dtypeSize(type));
      return Status::ok();
    }
    std::fill(counts.begin(), counts.end(), count);
    return group->allGather(send, recv, counts.data(), type);
  }
  // Every rank's kk (index, value) pairs in sendPairs gathered and added into out.
  Status exchangePairs(int64_t kk) {
    if (Status s = gather(sendPairs, recvPairs, 2 * kk, plan::DType::I32); !s)
      return s;
    std::fill(out, out + n, 0.0f);
    for (int r = 0; r < ranks; ++r) {
      const int32_t *idx = recvPairs + 2 * kk * r;
      const auto *val = reinterpret_cast<const float *>(idx + kk);
      if (int64_t bad = cpu::scatterAddPairs(idx, val, kk, 1.0f, out, n); bad >= 0)
        return Status::error("rank " + std::to_string(r) + " of the group sent index " +
                             std::to_string(idx[bad]) + ", outside [0, " + std::to_string(n) + ")");
    }
    return Status::ok();
  }

  Status prepare(int64_t count) override { return lg ? adapt(count) : Status::ok(); }

  Status copy(float *dst, const float *src, int64_t count) override {
    if (dst != src)
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
    return Status::ok();
  }

  Status topk() override {
    cpu::topkEncode(source, s0, n, k, order, sendPairs, reinterpret_cast<float *>(sendPairs + k));
    return exchangePairs(k);
  }

  Status randomk(int64_t count) override {
    int32_t *idx = sendPairs;
    float *val = reinterpret_cast<float *>(sendPairs + k);
    cpu::randomkIndices(n, k, c->seed(), static_cast<uint64_t>(count), order, idx);
    cpu::randomkEncode(source, n, k, idx, val);
    if (Status s = sum(val, k); !s)
      return s;
    std::fill(out, out + n, 0.0f);
    cpu::scatterAddPairs(idx, val, k, 1.0f, out, n);
    return Status::ok();
  }

  // The factor that brings `x` (n elements) to the codec's clip norm (1:
  // within it, or no clipping): DGC's local gradient clipping (section 3.3),
  // EDiT's clip of the averaged pseudo-gradient.
  float clipFactor(const float *x) const {
    if (c->clip() <= 0.0f)
      return 1.0f;
    double squares = 0.0;
    for (int64_t i = 0; i < n; ++i)
      squares += static_cast<double>(x[i]) * x[i];
    const double norm = std::sqrt(squares);
    return norm > c->clip() ? static_cast<float>(c->clip() / norm) : 1.0f;
  }

  Status adamUpdate(int64_t count) override {
    auto [m, s] = moments();
    cpu::adamUpdate(grad, clipFactor(grad), m, s, update, n, c->momentum(), c->beta2(), c->eps(),
                    count + 1, 1.0f / static_cast<float>(ranks));
    return Status::ok();
  }

  Status dgc(int64_t count) override {
    const int64_t kk = pairsFor(dgcDensity(*c, count), n);
    float *val = reinterpret_cast<float *>(sendPairs + kk);
    if (c->beta2() > 0.0f) {
      // Under AdamW the update is accumulated as it is (adamUpdate).
      cpu::dgcEncode(source, nullptr, s1, n, kk, 0.0f, order, sendPairs, val);
      return exchangePairs(kk);
    }
    const float *g = grad;
    if (const float factor = clipFactor(grad); factor != 1.0f) {
      // Each rank's gradient to the threshold, before it is accumulated.
      cpu::scale(grad, factor, work, n);
      g = work;
    }
    cpu::dgcEncode(g, s0, s1, n, kk, c->momentum(), order, sendPairs, val);
    return exchangePairs(kk);
  }

  Status qsgd(int64_t count) override {
    const int64_t buckets = scaleCount(), packed = codeBytes();
    // Ranks draw independently, steps by count.
    cpu::qsgdEncode(source, n, levels, c->bucket(), qsgdRankSeed(c->seed(), me),
                    static_cast<uint64_t>(count), codes, small);
    cpu::qsgdPackCodes(codes, n, bits, sendBytes);
    if (Status s = gather(sendBytes, recvBytes, packed, plan::DType::U8); !s)
      return s;
    if (Status s = gather(small, smallAll, buckets, plan::DType::F32); !s)
      return s;
    std::fill(out, out + n, 0.0f);
    for (int r = 0; r < ranks; ++r) {
      cpu::qsgdUnpackCodes(recvBytes + packed * r, n, bits, codes);
      cpu::qsgdDecode(codes, smallAll + buckets * r, 1, n, levels, c->bucket(), 1.0f, out);
    }
    return Status::ok();
  }

  // EF-SignSGD with a scale per bucket; with a momentum (the SGD's, taken by
  // sbp-compress-gradients) u = momentum u + grad is what is compressed, as
  // the paper's reference code does.
  Status sign() override {
    const float *g = source;
    if (c->momentum() > 0.0f) {
      cpu::accumulateMomentum(source, s1, n, c->momentum());
      g = s1;
    }
    cpu::signEncode(g, s0, n, c->bucket(), sendBytes, small);
    if (Status s = gather(sendBytes, recvBytes, codeBytes(), plan::DType::U8); !s)
      return s;
    if (Status s = gather(small, smallAll, scaleCount(), plan::DType::F32); !s)
      return s;
    std::fill(out, out + n, 0.0f);
    cpu::signDecode(recvBytes, smallAll, ranks, n, c->bucket(), 1.0f, out);
    return Status::ok();
  }

  // PowerSGD's phases (Codecs.h).
  Status powerSgdP(int64_t count, int64_t start) override {
    // Q starts afresh where L-GreCo just changed this layer's rank.
    const bool switched =
        lg && count > 1 && (count - 1) % lg->every() == 0 && previous[layer] != choice[layer];
    if (count == 0 || switched)
      for (int64_t i = 0; i < cols * rank; ++i)
        s1[i] = powerSgdStart(c->seed(), start + i);
    for (int64_t i = 0; i < n; ++i)
      work[i] = source[i] + s0[i];
    cpu::matmul(work, s1, small, rows, rank, cols, false, false);
    return Status::ok();
  }

  Status powerSgdQ(float *q) override {
    cpu::orthogonalizeColumns(small, rows, rank);
    cpu::matmul(work, small, q, cols, rank, rows, true, false);
    cpu::matmul(small, q, out, rows, cols, rank, false, true);
    for (int64_t i = 0; i < n; ++i)
      s0[i] = work[i] - out[i];
    return Status::ok();
  }

  Status powerSgdOut(const float *q) override {
    std::memcpy(s1, q, static_cast<size_t>(cols * rank) * sizeof(float));
    cpu::matmul(small, s1, out, rows, cols, rank, false, true);
    return Status::ok();
  }

  // L-GreCo: this exchange's parameter from the shared choice; every
  // `every` exchanges, this layer's errors and payload sizes for each
  // candidate, and the decision once every layer has measured.
  Status adapt(int64_t count) {
    if (choice[layer] < 0 || choice[layer] >= static_cast<int>(candidates->size()))
      return Status::error("L-GreCo's choice for layer " + std::to_string(layer) + " is " +
                           std::to_string(choice[layer]) + ", not a candidate index (0 to " +
                           std::to_string(candidates->size() - 1) + ")");
    setParameter(candidates->Get(static_cast<flatbuffers::uoffset_t>(choice[layer])));
    const int64_t every = lg->every(), phase = count % every;
    if (count > 0 && phase == 0) {
      measure(table + static_cast<size_t>(layer) * 2 * candidates->size());
      std::fill(acc, acc + n, 0.0f);
      if (++*pending == lg->layers()) {
        *pending = 0;
        if (Status s = decide(); !s)
          return s;
      }
    }
    // The gradients (with error feedback) of the last exchanges before the
    // next decision, summed.
    if (phase >= every - cpu::kLgrecoAccumulate)
      for (int64_t i = 0; i < n; ++i)
        acc[i] += source[i] + (s0 ? s0[i] : 0.0f);
    return Status::ok();
  }

  // Bytes this rank puts into one exchange of the codec with `value`.
  double payloadBytes(float value) const {
    if (kind == Codec::TopK) {
      return 8.0 * static_cast<double>(pairsFor(value, n));
    }
    if (kind == Codec::TopK2Bit) {
      const int64_t kk = pairsFor(value, n);
      return static_cast<double>(cpu::topkTwoBitPayloadBytes(kk));
    }
    if (kind == Codec::Qsgd)
      return static_cast<double>(cpu::qsgdPackedBytes(n, static_cast<int>(value)) +
                                 4 * cpu::bucketCount(n, c->bucket()));
    return 4.0 * value * static_cast<double>(rows + cols);
  }

  // row[j]: the error (Frobenius norm) candidate j leaves in M, the
  // accumulated gradients in acc; row[C + j]: its payload bytes. Sparse
  // codecs sort acc's magnitudes in place (adapt zeroes it next).
  void measure(float *row) {
    const flatbuffers::uoffset_t C = candidates->size();
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i)
      total += static_cast<double>(acc[i]) * acc[i];
    if (isSparseCodec(kind)) {
      // One sort serves every density.
      for (int64_t i = 0; i < n; ++i)
        acc[i] = std::fabs(acc[i]);
      std::sort(acc, acc + n, std::greater<float>());
    }
    for (flatbuffers::uoffset_t j = 0; j < C; ++j) {
      double error = 0.0;
      if (isSparseCodec(kind)) {
        // What top-k leaves out: the total less the k largest squares
        // (`acc` holds the magnitudes in decreasing order, below).
        const int64_t kk = pairsFor(candidates->Get(j), n);
        double kept = 0.0;
        for (int64_t i = 0; i < kk; ++i)
          kept += static_cast<double>(acc[i]) * acc[i];
        error = std::max(0.0, total - kept);
      } else if (kind == Codec::Qsgd) {
        // Stochastic rounding's expected squared error: unit^2 f (1 - f) per
        // element, f the fractional level.
        const double s = static_cast<double>((1 << (static_cast<int>(candidates->Get(j)) - 1)) - 1);
        for (int64_t begin = 0; begin < n; begin += c->bucket()) {
          const int64_t end = std::min<int64_t>(n, begin + c->bucket());
          double squares = 0.0;
          for (int64_t i = begin; i < end; ++i)
            squares += static_cast<double>(acc[i]) * acc[i];
          const double unit = std::sqrt(squares) / s;
          if (unit == 0.0)
            continue;
          for (int64_t i = begin; i < end; ++i) {
            const double r = std::fabs(acc[i]) / unit, f = r - std::floor(r);
            error += unit * unit * f * (1.0 - f);
          }
        }
      } else {
        // PowerSGD: power iterations from a random start (the same on every
        // rank); P orthonormal, so ||M - P P^T M||^2 = ||M||^2 - ||M^T P||^2.
        const auto r = static_cast<int64_t>(candidates->Get(j));
        for (int64_t i = 0; i < cols * r; ++i) // its own stream; the seed's low word
          powerQ[i] = powerSgdStart(c->seed() & 0xffffffffu, i, 0x4C475243u);
        for (int iteration = 0; iteration < cpu::kLgrecoPowerIterations; ++iteration) {
          cpu::matmul(acc, powerQ, powerP, rows, r, cols, false, false);
          cpu::orthogonalizeColumns(powerP, rows, r);
          cpu::matmul(acc, powerP, powerQ, cols, r, rows, true, false);
        }
        double projected = 0.0;
        for (int64_t i = 0; i < cols * r; ++i)
          projected += static_cast<double>(powerQ[i]) * powerQ[i];
        error = std::max(0.0, total - projected);
      }
      row[j] = static_cast<float>(std::sqrt(error));
      row[C + j] = static_cast<float>(payloadBytes(candidates->Get(j)));
    }
  }

  // The table summed over the group (every rank then decides alike), then
  // L-GreCo's knapsack (cpu::lgrecoChoose) over it.
  Status decide() {
    const int layers = lg->layers();
    const auto C = static_cast<int64_t>(candidates->size());
    if (Status s = sum(table, static_cast<int64_t>(layers) * 2 * C); !s)
      return s;
    for (int l = 0; l < layers; ++l)
      previous[l] = choice[l];
    cpu::lgrecoChoose(table, layers, C, lg->default_index(), choice, dp.data(), picks.data());
    return Status::ok();
  }

  // Top-k whose values travel as 2-bit codes (SparseLoCo): the quantisation
  // error joins the residual. Payload bytes: k indices (i32, or u16 offsets
  // within their chunks), the codes, the 5-float table. With a chunk, each
  // chunk's top pairs are chosen alone, and the residual first decays.
  Status topk2bit() override {
    const bool chunked = c->chunk() > 0;
    const int64_t indexBytes = twoBitIndexBytes(*c);
    const int64_t codeBytes = cpu::twoBitCodeBytes(k);
    const int64_t payload = cpu::topkTwoBitPayloadBytes(k, indexBytes);
    int32_t *idx = sendPairs;
    float *val = reinterpret_cast<float *>(sendPairs + k);
    if (const float decay = c->decay(); decay != 1.0f)
      for (int64_t i = 0; i < n; ++i)
        s0[i] *= decay;
    if (!chunked) {
      cpu::topkEncode(source, s0, n, k, order, idx, val);
    } else {
      // Each chunk's offsets, then its first element added: global indices.
      for (int64_t j = 0; j < chunks.count(); ++j) {
        const int64_t at = chunks.start(j), p = chunks.firstPair(j);
        cpu::topkEncode(source + at, s0 + at, chunks.length(j), chunks.pairsOf(j), order, idx + p,
                        val + p);
        for (int64_t i = p; i < p + chunks.pairsOf(j); ++i) {
          const auto offset = static_cast<uint16_t>(idx[i]);
          std::memcpy(sendBytes + 2 * i, &offset, 2);
          idx[i] += static_cast<int32_t>(at);
        }
      }
    }
    float table[cpu::kTwoBitTableFloats];
    cpu::twoBitEncode(val, k, sendBytes + indexBytes * k, table, work);
    cpu::scatterAddPairs(idx, work, k, 1.0f, s0, n);
    if (!chunked)
      std::memcpy(sendBytes, idx, 4 * static_cast<size_t>(k));
    std::memcpy(sendBytes + indexBytes * k + codeBytes, table, sizeof table);
    if (Status s = gather(sendBytes, recvBytes, payload, plan::DType::U8); !s)
      return s;
    std::fill(out, out + n, 0.0f);
    // Averaged over its senders: how many ranks sent each index (`order` is
    // free once this rank's pairs are chosen).
    int32_t *senders = c->mean_over_senders() ? order : nullptr;
    if (senders)
      std::fill(senders, senders + n, 0);
    for (int r = 0; r < ranks; ++r) {
      const uint8_t *from = recvBytes + payload * r;
      if (!chunked) {
        std::memcpy(idx, from, 4 * static_cast<size_t>(k));
      } else {
        for (int64_t i = 0; i < k; ++i) {
          uint16_t offset = 0;
          std::memcpy(&offset, from + 2 * i, 2);
          const int64_t j = chunkOfPair(i, chunks.full, chunks.perFull);
          if (offset >= chunks.length(j))
            return Status::error("rank " + std::to_string(r) + " of the group sent offset " +
                                 std::to_string(offset) + " in chunk " + std::to_string(j) +
                                 " of " + std::to_string(chunks.length(j)) + " elements");
          idx[i] = static_cast<int32_t>(chunks.start(j) + offset);
        }
      }
      std::memcpy(table, from + indexBytes * k + codeBytes, sizeof table);
      cpu::twoBitDecode(from + indexBytes * k, table, 1, k, val);
      if (int64_t bad = cpu::scatterAddPairs(idx, val, k, 1.0f, out, n); bad >= 0)
        return Status::error("rank " + std::to_string(r) + " of the group sent index " +
                             std::to_string(idx[bad]) + ", outside [0, " + std::to_string(n) + ")");
      if (senders)
        for (int64_t i = 0; i < k; ++i)
          ++senders[idx[i]];
    }
    if (senders)
      for (int64_t i = 0; i < n; ++i)
        if (senders[i] > 1)
          out[i] /= static_cast<float>(senders[i]);
    return Status::ok();
  }

  // EDiT: this rank's norm (anomalous: its pseudo-gradient dropped, its norm
  // penalised), the group's norms (A-EDiT: and inner steps) gathered, out =
  // the sum of each rank's weighted pseudo-gradient, clipped to norm `clip`.
  Status edit() override {
    const double norm = std::sqrt(static_cast<double>(cpu::squareSum(source, n)));
    const bool dropped = cpu::editAnomalous(s0, norm);
    small[0] = static_cast<float>(norm) + (dropped ? cpu::kEditOutlierPenalty : 0.0f);
    const int64_t fields = innerSteps ? 2 : 1;
    if (innerSteps)
      small[1] = static_cast<float>(*innerSteps);
    if (Status s = gather(small, smallAll, fields, plan::DType::F32); !s)
      return s;
    float *norms = smallAll + fields * ranks, *steps = norms + ranks, *weights = steps + ranks;
    for (int r = 0; r < ranks; ++r)
      norms[r] = smallAll[fields * r];
    cpu::editWeights(norms, ranks, c->temperature(), weights);
    if (innerSteps) {
      for (int r = 0; r < ranks; ++r)
        steps[r] = smallAll[fields * r + 1];
      cpu::editStepWeights(steps, ranks, c->step_weight(), weights);
    }
    cpu::scale(source, dropped ? 0.0f : weights[me], out, n);
    if (Status s = sum(out, n); !s)
      return s;
    if (const float factor = clipFactor(out); factor != 1.0f)
      cpu::scale(out, factor, out, n);
    return Status::ok();
  }
};

} // namespace

StatusOr<Kernel> cpuCompressedAllReduce(const OpArgs &a) {
  auto task = std::make_shared<CodecTask>();
  if (Status s = task->bind<Exchange>(a); !s)
    return s;
  if (task->elements() == 0)
    return launch(a, [task] { return task->countOnly(); });
  if (task->parts.front()->kind == Codec::PowerSgd)
    task->takePowerSgdBuffers(a);

  auto floats = [&](int64_t count) { return static_cast<float *>(a.scratch(4 * count)); };
  auto bytes = [&](int64_t count) { return static_cast<uint8_t *>(a.scratch(count)); };
  auto ints = [&](int64_t count) { return static_cast<int32_t *>(a.scratch(4 * count)); };
  auto *x = static_cast<Exchange *>(task->parts.front().get());
  const plan::CodecAttrs &c = *x->c;
  const int64_t n = x->n, k = x->k, R = x->ranks;
  switch (c.kind()) {
  case Codec::TopK:
  case Codec::Dgc:
    x->order = ints(n);
    x->sendPairs = ints(2 * k);
    x->recvPairs = ints(2 * k * R);
    if (c.kind() == Codec::Dgc && c.clip() > 0.0f)
      x->work = floats(n);
    break;
  case Codec::RandomK:
    x->order = ints(n);
    x->sendPairs = ints(2 * k);
    break;
  case Codec::Qsgd:
  case Codec::Sign:
    x->takeCodeBuffers(a);
    break;
  case Codec::PowerSgd:
    break; // takePowerSgdBuffers
  case Codec::Edit:
    x->small = floats(2);
    // The group's (norm[, inner steps]), its norms, steps and weights.
    x->smallAll = floats(5 * R);
    break;
  case Codec::TopK2Bit: {
    const int64_t payload = cpu::topkTwoBitPayloadBytes(k, twoBitIndexBytes(c));
    x->order = ints(n);
    x->sendPairs = ints(2 * k);
    x->work = floats(k);
    x->sendBytes = bytes(payload);
    x->recvBytes = bytes(payload * R);
    break;
  }
  }
  for (const auto &part : task->parts)
    part->takeUpdateBuffer(a);
  // L-GreCo: each part's row, its measuring scratch and the shared table.
  if (const plan::LgrecoAttrs *lg = c.lgreco()) {
    auto f32 = [&](int v) { return data<float>(&(*a.variables)[v]); };
    auto i32 = [&](int v) { return data<int32_t>(&(*a.variables)[v]); };
    for (size_t j = 0; j < task->parts.size(); ++j) {
      auto *part = static_cast<Exchange *>(task->parts[j].get());
      part->lg = lg;
      part->layer = lg->layer() + static_cast<int>(j);
      part->candidates = lg->candidates();
      part->table = f32(lg->errors());
      part->choice = i32(lg->choice());
      part->previous = i32(lg->previous());
      part->pending = i32(lg->pending());
      if (c.kind() == Codec::PowerSgd) {
        part->powerP = floats(part->rows * part->rank);
        part->powerQ = floats(part->cols * part->rank);
      }
      part->dp.resize(2 * (cpu::kLgrecoUnits + 1));
      part->picks.resize(static_cast<size_t>(lg->layers()) * (cpu::kLgrecoUnits + 1));
    }
  }
  return launch(a, [task] { return task->run(); });
}

} // namespace sbpflow::ops

// Compressed all-reduces (kernels/Codecs.cpp) in the executor: N ranks
// training with a codec end where one process running the same codec
// arithmetic per rank, with the exchange simulated, ends (every codec, 2 and
// 4 ranks, several steps, a dense warm-up); and the loader's refusal of
// malformed codec plans.
#include "actors/Executor.h"
#include "actors/Variables.h"
#include "kernels/Codecs.h"
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Quantize.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/data/DataSource.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/TempDir.h"
#include "tests/actors/TestActorSystem.h"
#include "tests/plan/TestPlans.h"

#include <caf/all.hpp>
#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

// x [kBatch, kC] split S(0); w [kC, kD]; the gradient of 0.5 ||x w||^2 is
// x^T x w, a partial sum [kC, kD] on each rank (n = 35 elements: PowerSGD
// sees a 7 x 5 matrix). 10 rows: 5 + 5 on two ranks, 3 + 3 + 2 + 2 on four.
constexpr int64_t kBatch = 10, kC = 7, kD = 5, kN = kC * kD;
// Each state row is longer than what the codec uses (n, or cols * rank).
constexpr int64_t kStateCols = cpu::kEditStateFloats + 5; // EDiT's row is the longest
constexpr float kLr = 0.01f;
constexpr int kSteps = 8;

float sample(int64_t batch, int64_t row, int64_t col) {
  return static_cast<float>(std::sin(0.7 * batch + 1.3 * row + 0.4 * col + 0.1) +
                            0.3 * std::cos(2.1 * col - 0.5 * row));
}

// "x" f32 [kC]: row r of batch b, column c = sample(b, r, c).
class RowData : public DataSource {
public:
  RowData() { fields_ = {{"x", FieldType::F32, {kC}}}; }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &, int64_t, int64_t batch, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (int64_t r = 0; r < rowCount; ++r)
      for (int64_t c = 0; c < kC; ++c)
        static_cast<float *>(dst)[r * kC + c] = sample(batch, rowBegin + r, c);
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
};

// L-GreCo's shared variables appended to `spec` as sbp-compress-gradients
// declares them (the choices start at the default), their indices set in
// `lg`.
void addLgrecoVariables(PlanSpec &spec, LgrecoSpec &lg) {
  auto add = [&](VariableSpec v) {
    spec.variables.push_back(std::move(v));
    return static_cast<int>(spec.variables.size()) - 1;
  };
  auto i32 = [](const char *name, std::vector<int64_t> shape, plan::InitKind init, float value) {
    return VariableSpec{name, std::move(shape), 0, {B()}, init, value, 0, 0, plan::DType::I32};
  };
  const auto C = static_cast<int64_t>(lg.candidates.size());
  const auto start = static_cast<float>(lg.defaultIndex);
  lg.errors = add({"lgreco.errors", {lg.layers, 2 * C}, 0, {B()}});
  lg.choice = add(i32("lgreco.choice", {lg.layers}, plan::InitKind::Constant, start));
  lg.previous = add(i32("lgreco.previous", {lg.layers}, plan::InitKind::Constant, start));
  lg.pending = add(i32("lgreco.pending", {}, plan::InitKind::Zeros, 0));
}

// Variables: 0 w [kC, kD] B; 1, 2 the codec's state [ranks, kStateCols] S(0)
// (uniform, so that a rank reading another's row is seen); 3 the step counter;
// under AdamW DGC 4 its second moment (uniform, non-negative). Tensors: x, w, y
// = x w, g = x^T y (P), gsum = the compressed all-reduce of g (B), then w -=
// kLr gsum. With `bf16Gradient`, g is cast to bf16 before the all-reduce (a
// plan the loader must refuse).
PlanSpec codecPlan(int ranks, CodecSpec codec, bool bf16Gradient = false) {
  PlanSpec spec;
  std::vector<int> rankList(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    rankList[r] = r;
  spec.placements = {{"cpu", rankList, {ranks}}};
  spec.variables = {
      {"w", {kC, kD}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 7},
      {"g.codec.s0", {ranks, kStateCols}, 0, {S(0)}, plan::InitKind::Uniform, -0.2f, 0.2f, 8},
      {"g.codec.s1", {ranks, kStateCols}, 0, {S(0)}, plan::InitKind::Uniform, -0.2f, 0.2f, 9},
      {"g.codec.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32}};
  if (codec.lgreco)
    addLgrecoVariables(spec, *codec.lgreco); // 4 errors, 5 choice, 6 previous, 7 pending
  if (codec.beta2 > 0)
    spec.variables.push_back(
        {"g.codec.s2", {ranks, kStateCols}, 0, {S(0)}, plan::InitKind::Uniform, 0.0f, 0.04f, 10});
  codec.present = true;
  const plan::DType gType = bf16Gradient ? plan::DType::BF16 : plan::DType::F32;
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kC}, {S(0)}},                 // 0
      {"w", {kC, kD}, {B()}, plan::DType::F32, 0}, // 1
      {"y", {kBatch, kD}, {S(0)}},                 // 2
      {"g", {kC, kD}, {P()}},                      // 3
      {"g.t", {kC, kD}, {P()}, gType},             // 4
      {"gsum.t", {kC, kD}, {B()}, gType},          // 5
      {"gsum", {kC, kD}, {B()}},                   // 6
  };
  using K = plan::OpKind;
  TaskSpec mm = makeTask("fc.matmul", K::MatMul, {0, 1}, {2}, plan::OpAttrs::MatMulAttrs);
  TaskSpec grad = makeTask("fc.matmul.grad", K::MatMul, {0, 2}, {3}, plan::OpAttrs::MatMulAttrs);
  grad.transA = true;
  TaskSpec allReduce = makeTask("g.allreduce", K::AllReduce, {bf16Gradient ? 4 : 3},
                                {bf16Gradient ? 5 : 6}, plan::OpAttrs::CollectiveAttrs);
  allReduce.codec = codec;
  TaskSpec sgd = makeTask("sgd.w", K::SgdMomentum, {6}, {}, plan::OpAttrs::SgdAttrs);
  sgd.lr = kLr;
  sgd.param = 0;
  prog.tasks = {inputTask("input.x", 0, "x"), makeTask("w", K::Parameter, {}, {1}), mm, grad};
  if (bf16Gradient)
    prog.tasks.push_back(makeTask("g.cast", K::Cast, {3}, {4}));
  prog.tasks.push_back(allReduce);
  if (bf16Gradient)
    prog.tasks.push_back(makeTask("gsum.cast", K::Cast, {5}, {6}));
  prog.tasks.push_back(sgd);
  prog.inputs = {{"x", 0}};
  spec.programs.push_back(prog);
  finalize(spec);
  // The update must not start before the forward matmul has read w.
  spec.programs[0].registers.push_back(
      {2, -1, {static_cast<int>(spec.programs[0].tasks.size()) - 1}, 1});
  return spec;
}

// The initial values of variable `v` of `spec`, as every layout starts.
std::vector<float> initialValues(const PlanSpec &spec, int v) {
  const VariableSpec &var = spec.variables[v];
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(plan::CreateInit(fbb, var.init, var.a, var.b, var.seed));
  return initGlobalTensor(*flatbuffers::GetRoot<plan::Init>(fbb.GetBufferPointer()),
                          elementCount(Shape(var.shape.begin(), var.shape.end())));
}

// ---------------------------------------------------------------- reference

// What the N ranks hold after `steps` steps, computed in one process: each
// rank's partial gradient from its balanced chunk of rows (the kernels' own
// cpu::matmul), each rank's codec step on its own state row, the exchange
// simulated (payloads concatenated and decoded in rank order, sums in rank
// order), then SGD.
struct Reference {
  std::vector<float> w;
  std::vector<float> s0, s1, s2; // [ranks, kStateCols]
  int32_t step = 0;
  // L-GreCo (one layer): the summed table, the choice and the one before.
  std::vector<float> table;
  int32_t choice = 0, previous = 0;
};

int64_t pairsFor(double density, int64_t n) {
  const auto k = static_cast<int64_t>(std::ceil(density * static_cast<double>(n)));
  return std::clamp<int64_t>(k, 1, n);
}

// PowerSGD's sum of one [rows, cols] matrix over the ranks (Vogels et al.
// 2019, Algorithm 1 with error feedback) at exchange `count`: each rank's
// residual s0[r] and Q s1[r] updated; Q starts from the same draws on every
// rank, at `start` (a matrix's offset among its task's Q draws).
void powerSgdSum(const CodecSpec &c, int64_t start, int64_t rows, int64_t cols,
                 const std::vector<std::vector<float>> &grads, const std::vector<float *> &s0,
                 const std::vector<float *> &s1, int64_t count, float *out) {
  const int64_t rk = c.rank, n = rows * cols;
  const auto ranks = static_cast<int>(grads.size());
  if (count == 0)
    for (int r = 0; r < ranks; ++r)
      for (int64_t i = 0; i < cols * rk; ++i)
        s1[r][i] = ops::powerSgdStart(c.seed, start + i);
  std::vector<std::vector<float>> m(ranks, std::vector<float>(n));
  std::vector<float> p(rows * rk, 0.0f), pr(rows * rk);
  for (int r = 0; r < ranks; ++r) {
    for (int64_t i = 0; i < n; ++i)
      m[r][i] = grads[r][i] + s0[r][i];
    cpu::matmul(m[r].data(), s1[r], pr.data(), rows, rk, cols, false, false);
    for (int64_t i = 0; i < rows * rk; ++i)
      p[i] += pr[i];
  }
  cpu::orthogonalizeColumns(p.data(), rows, rk);
  std::vector<float> q(cols * rk, 0.0f), mine(n);
  for (int r = 0; r < ranks; ++r) {
    cpu::matmul(m[r].data(), p.data(), s1[r], cols, rk, rows, true, false);
    cpu::matmul(p.data(), s1[r], mine.data(), rows, cols, rk, false, true);
    for (int64_t i = 0; i < n; ++i)
      s0[r][i] = m[r][i] - mine[i];
    for (int64_t i = 0; i < cols * rk; ++i)
      q[i] += s1[r][i];
  }
  for (int r = 0; r < ranks; ++r)
    std::copy(q.begin(), q.end(), s1[r]);
  cpu::matmul(p.data(), q.data(), out, rows, cols, rk, false, true);
}

// DGC's (and top-k's under AdamW) local clipping: the factor that brings
// `g` to norm `clip` (1 within it, or without clipping).
float localClipFactor(const std::vector<float> &g, float clip) {
  double squares = 0;
  for (float v : g)
    squares += static_cast<double>(v) * v;
  return clip > 0 && std::sqrt(squares) > clip ? static_cast<float>(clip / std::sqrt(squares))
                                               : 1.0f;
}

// SparseLoCo's chunked exchange, written out: each rank's residual decays,
// takes its gradient, and gives up, chunk by chunk, its `density` largest
// magnitudes (the earlier index first among equals; at least one a chunk);
// they travel in 2-bit values (cpu::twoBitEncode, tested on its own), and
// what the codes miss returns to the residual. Every rank's (index, value)
// pairs, decoded, are appended to idxAll and valAll in rank order.
void chunkedTwoBitPairs(const CodecSpec &c, int ranks, const std::vector<std::vector<float>> &grads,
                        Reference &ref, std::vector<int32_t> &idxAll, std::vector<float> &valAll) {
  const int64_t n = kN;
  std::vector<uint8_t> codes;
  std::vector<float> tables;
  int64_t k = 0;
  for (int r = 0; r < ranks; ++r) {
    float *residual = ref.s0.data() + r * kStateCols;
    std::vector<float> acc(n);
    for (int64_t i = 0; i < n; ++i)
      acc[i] = residual[i] * c.decay + grads[r][i];
    std::vector<int32_t> idx;
    for (int64_t start = 0; start < n; start += c.chunk) {
      const int64_t end = std::min<int64_t>(n, start + c.chunk);
      std::vector<int32_t> order;
      for (int64_t i = start; i < end; ++i)
        order.push_back(static_cast<int32_t>(i));
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return std::fabs(acc[a]) > std::fabs(acc[b]); });
      order.resize(static_cast<size_t>(pairsFor(c.density, end - start)));
      std::sort(order.begin(), order.end());
      for (int32_t i : order)
        idx.push_back(i);
    }
    k = static_cast<int64_t>(idx.size());
    std::vector<float> val(k), unsent(k);
    for (int64_t j = 0; j < k; ++j)
      val[j] = acc[idx[j]];
    for (int64_t i = 0; i < n; ++i)
      residual[i] = acc[i];
    for (int32_t i : idx)
      residual[i] = 0.0f;
    codes.resize(codes.size() + cpu::twoBitCodeBytes(k));
    tables.resize(tables.size() + cpu::kTwoBitTableFloats);
    cpu::twoBitEncode(val.data(), k, codes.data() + cpu::twoBitCodeBytes(k) * r,
                      tables.data() + cpu::kTwoBitTableFloats * r, unsent.data());
    for (int64_t j = 0; j < k; ++j) {
      residual[idx[j]] += unsent[j];
      idxAll.push_back(idx[j]);
    }
  }
  valAll.resize(k * ranks);
  cpu::twoBitDecode(codes.data(), tables.data(), ranks, k, valAll.data());
}

// The sum over ranks of the decoded payloads of exchange `count` (after the
// warm-up), each rank's state updated.
std::vector<float> compressedSum(const CodecSpec &c, int ranks,
                                 const std::vector<std::vector<float>> &grads, Reference &ref,
                                 int64_t count) {
  const int64_t n = kN, rows = kC, cols = kD;
  std::vector<float> out(n, 0.0f);
  auto s0 = [&](int r) { return ref.s0.data() + r * kStateCols; };
  auto s1 = [&](int r) { return ref.s1.data() + r * kStateCols; };
  std::vector<int32_t> order(n);
  // Gathered (index, value) pairs of every rank, decoded in rank order.
  std::vector<int32_t> idxAll;
  std::vector<float> valAll;
  switch (c.kind) {
  case plan::Codec::TopK:
  case plan::Codec::Dgc: {
    int64_t k = pairsFor(c.density, n);
    if (c.kind == plan::Codec::Dgc && c.epochSteps > 0)
      k = pairsFor(cpu::dgcWarmupDensity(count / c.epochSteps, c.density), n);
    for (int r = 0; r < ranks; ++r) {
      std::vector<int32_t> idx(k);
      std::vector<float> val(k), g = grads[r];
      if (c.kind == plan::Codec::TopK) {
        cpu::topkEncode(g.data(), s0(r), n, k, order.data(), idx.data(), val.data());
      } else if (c.beta2 > 0) {
        // Under AdamW: the update (referenceRun made it, clipped) as it is.
        cpu::dgcEncode(g.data(), nullptr, s1(r), n, k, 0.0f, order.data(), idx.data(), val.data());
      } else {
        // DGC's local clipping: this rank's gradient to norm `clip`.
        const float factor = localClipFactor(g, c.clip);
        for (float &v : g)
          v *= factor;
        cpu::dgcEncode(g.data(), s0(r), s1(r), n, k, c.momentum, order.data(), idx.data(),
                       val.data());
      }
      idxAll.insert(idxAll.end(), idx.begin(), idx.end());
      valAll.insert(valAll.end(), val.begin(), val.end());
    }
    break;
  }
  case plan::Codec::RandomK: {
    const int64_t k = pairsFor(c.density, n);
    std::vector<int32_t> idx(k);
    cpu::randomkIndices(n, k, c.seed, static_cast<uint64_t>(count), order.data(), idx.data());
    std::vector<float> sum(k, 0.0f), val(k);
    for (int r = 0; r < ranks; ++r) {
      cpu::randomkEncode(grads[r].data(), n, k, idx.data(), val.data());
      for (int64_t j = 0; j < k; ++j)
        sum[j] += val[j];
    }
    idxAll = idx;
    valAll = sum;
    break;
  }
  case plan::Codec::Qsgd: {
    const int levels = (1 << (c.bits - 1)) - 1;
    const int64_t buckets = cpu::bucketCount(n, c.bucket);
    std::vector<uint8_t> codes(n * ranks);
    std::vector<float> norms(buckets * ranks);
    for (int r = 0; r < ranks; ++r) {
      // Ranks draw independently: the seed differs by rank.
      cpu::qsgdEncode(grads[r].data(), n, levels, c.bucket, ops::qsgdRankSeed(c.seed, r),
                      static_cast<uint64_t>(count), codes.data() + n * r,
                      norms.data() + buckets * r);
    }
    cpu::qsgdDecode(codes.data(), norms.data(), ranks, n, levels, c.bucket, 1.0f, out.data());
    return out;
  }
  case plan::Codec::Sign: {
    const int64_t bytes = cpu::signCodeBytes(n);
    std::vector<uint8_t> codes(bytes * ranks);
    const int64_t buckets = cpu::bucketCount(n, c.bucket);
    std::vector<float> scales(buckets * ranks);
    for (int r = 0; r < ranks; ++r) {
      // EF-SignSGD compresses the momentum it took, where it took one.
      const float *g = grads[r].data();
      if (c.momentum > 0) {
        cpu::accumulateMomentum(g, s1(r), n, c.momentum);
        g = s1(r);
      }
      cpu::signEncode(g, s0(r), n, c.bucket, codes.data() + bytes * r, scales.data() + buckets * r);
    }
    cpu::signDecode(codes.data(), scales.data(), ranks, n, c.bucket, 1.0f, out.data());
    return out;
  }
  case plan::Codec::PowerSgd: {
    std::vector<float *> s0s, s1s;
    for (int r = 0; r < ranks; ++r) {
      s0s.push_back(s0(r));
      s1s.push_back(s1(r));
    }
    powerSgdSum(c, 0, rows, cols, grads, s0s, s1s, count, out.data());
    return out;
  }
  case plan::Codec::Edit: {
    // EDiT: each rank's norm (anomalous: its pseudo-gradient dropped, the
    // norm penalised; cpu::editAnomalous is tested on its own), weights
    // softmax(-norm / temperature) in double, the weighted sum clipped.
    std::vector<double> norms(ranks), w(ranks);
    std::vector<bool> dropped(ranks);
    double total = 0;
    for (int r = 0; r < ranks; ++r) {
      double squares = 0;
      for (float v : grads[r])
        squares += static_cast<double>(v) * v;
      norms[r] = std::sqrt(squares);
      dropped[r] = cpu::editAnomalous(s0(r), norms[r]);
      norms[r] = static_cast<float>(norms[r]) + (dropped[r] ? 1e6 : 0.0);
      total += std::exp(-norms[r] / c.temperature);
    }
    for (int r = 0; r < ranks; ++r) {
      w[r] = std::exp(-norms[r] / c.temperature) / total;
      // A-EDiT: every rank has taken the same steps (the codec's counter
      // before this exchange), so each has 1 / ranks of them.
      if (c.stepWeight > 0)
        w[r] = (1.0 - c.stepWeight) * w[r] + c.stepWeight / ranks;
      if (dropped[r])
        w[r] = 0.0;
    }
    double squares = 0;
    for (int64_t i = 0; i < n; ++i) {
      double v = 0;
      for (int r = 0; r < ranks; ++r)
        v += w[r] * grads[r][i];
      out[i] = static_cast<float>(v);
      squares += v * v;
    }
    if (std::sqrt(squares) > c.clip)
      for (float &v : out)
        v = static_cast<float>(v * (c.clip / std::sqrt(squares)));
    return out;
  }
  case plan::Codec::TopK2Bit: {
    if (c.chunk > 0) {
      chunkedTwoBitPairs(c, ranks, grads, ref, idxAll, valAll);
      if (!c.meanOverSenders)
        break;
      // Each index's mean over the ranks that sent it.
      std::vector<int> senders(n, 0);
      for (size_t i = 0; i < idxAll.size(); ++i) {
        out[idxAll[i]] += valAll[i];
        ++senders[idxAll[i]];
      }
      for (int64_t i = 0; i < n; ++i)
        if (senders[i] > 1)
          out[i] /= static_cast<float>(senders[i]);
      return out;
    }
    // SparseLoCo: top-k values sent as 2-bit codes, the quantisation error
    // back into the residual.
    const int64_t k = pairsFor(c.density, n), codeBytes = cpu::twoBitCodeBytes(k);
    std::vector<uint8_t> codes(codeBytes * ranks);
    std::vector<float> tables(cpu::kTwoBitTableFloats * ranks);
    for (int r = 0; r < ranks; ++r) {
      std::vector<int32_t> idx(k);
      std::vector<float> val(k), unsent(k);
      cpu::topkEncode(grads[r].data(), s0(r), n, k, order.data(), idx.data(), val.data());
      cpu::twoBitEncode(val.data(), k, codes.data() + codeBytes * r,
                        tables.data() + cpu::kTwoBitTableFloats * r, unsent.data());
      cpu::scatterAddPairs(idx.data(), unsent.data(), k, 1.0f, s0(r), n);
      idxAll.insert(idxAll.end(), idx.begin(), idx.end());
    }
    valAll.resize(k * ranks);
    cpu::twoBitDecode(codes.data(), tables.data(), ranks, k, valAll.data());
    break;
  }
  }
  EXPECT_EQ(cpu::scatterAddPairs(idxAll.data(), valAll.data(), static_cast<int64_t>(idxAll.size()),
                                 1.0f, out.data(), n),
            -1);
  return out;
}

// L-GreCo over top-k densities for the group, before exchange `count`, with
// each rank's accumulator in its row of s1: the density to use. At a
// decision, each rank's row of the table holds, per candidate, the norm of
// what top-k leaves out of its accumulated gradients and the payload bytes,
// summed over the ranks in rank order; the knapsack picks the choice (one
// layer: the fewest bytes within the default's error).
float lgrecoTopKDensity(const CodecSpec &c, int ranks, const std::vector<std::vector<float>> &grads,
                        Reference &ref, int64_t count) {
  const LgrecoSpec &lg = *c.lgreco;
  const auto C = static_cast<int64_t>(lg.candidates.size());
  auto acc = [&](int r) { return ref.s1.data() + r * kStateCols; };
  auto residual = [&](int r) { return ref.s0.data() + r * kStateCols; };
  const float density = lg.candidates[static_cast<size_t>(ref.choice)];
  if (count > 0 && count % lg.every == 0) {
    ref.table.assign(static_cast<size_t>(2 * C), 0.0f);
    for (int r = 0; r < ranks; ++r) {
      std::vector<double> squares(kN);
      double total = 0;
      for (int64_t i = 0; i < kN; ++i) {
        squares[i] = static_cast<double>(acc(r)[i]) * acc(r)[i];
        total += squares[i];
      }
      std::sort(squares.begin(), squares.end(), std::greater<double>());
      for (int64_t j = 0; j < C; ++j) {
        const int64_t k = pairsFor(lg.candidates[j], kN);
        double kept = 0;
        for (int64_t i = 0; i < k; ++i)
          kept += squares[i];
        ref.table[j] += static_cast<float>(std::sqrt(std::max(0.0, total - kept)));
        ref.table[C + j] += static_cast<float>(8 * k);
      }
      std::fill(acc(r), acc(r) + kN, 0.0f);
    }
    ref.previous = ref.choice;
    std::vector<double> dp(2 * (cpu::kLgrecoUnits + 1));
    std::vector<int8_t> picks(cpu::kLgrecoUnits + 1);
    cpu::lgrecoChoose(ref.table.data(), 1, C, lg.defaultIndex, &ref.choice, dp.data(),
                      picks.data());
  }
  if (count % lg.every >= lg.every - cpu::kLgrecoAccumulate)
    for (int r = 0; r < ranks; ++r)
      for (int64_t i = 0; i < kN; ++i)
        acc(r)[i] += grads[r][i] + residual(r)[i];
  return density;
}

Reference referenceRun(const PlanSpec &spec, const CodecSpec &c, int ranks, int steps) {
  Reference ref;
  ref.w = initialValues(spec, 0);
  ref.s0 = initialValues(spec, 1);
  ref.s1 = initialValues(spec, 2);
  if (c.beta2 > 0)
    ref.s2 = initialValues(spec, 4);
  if (c.lgreco)
    ref.choice = ref.previous = c.lgreco->defaultIndex;
  for (int step = 0; step < steps; ++step) {
    std::vector<std::vector<float>> grads;
    for (int r = 0; r < ranks; ++r) {
      const Chunk rows = balancedChunk(kBatch, ranks, r);
      std::vector<float> x(rows.size * kC), y(rows.size * kD), g(kN);
      for (int64_t i = 0; i < rows.size; ++i)
        for (int64_t j = 0; j < kC; ++j)
          x[i * kC + j] = sample(step, rows.begin + i, j);
      cpu::matmul(x.data(), ref.w.data(), y.data(), rows.size, kD, kC, false, false);
      cpu::matmul(x.data(), y.data(), g.data(), kC, kD, rows.size, true, false);
      if (c.beta2 > 0) {
        // Under AdamW: each rank's clipped gradient into its moments (DGC's
        // first and third rows, top-k's second and third), its update over
        // the ranks what it exchanges (warm-up included).
        const float factor = localClipFactor(g, c.clip);
        std::vector<float> update(kN);
        std::vector<float> &m = c.kind == plan::Codec::Dgc ? ref.s0 : ref.s1;
        cpu::adamUpdate(g.data(), factor, m.data() + r * kStateCols, ref.s2.data() + r * kStateCols,
                        update.data(), kN, c.momentum, c.beta2, c.eps, ref.step + 1,
                        1.0f / static_cast<float>(ranks));
        g = std::move(update);
      }
      grads.push_back(std::move(g));
    }
    std::vector<float> sum(kN, 0.0f);
    if (ref.step < c.warmupSteps) {
      for (int r = 0; r < ranks; ++r)
        for (int64_t i = 0; i < kN; ++i)
          sum[i] += grads[r][i];
    } else if (c.lgreco) {
      CodecSpec chosen = c;
      chosen.density = lgrecoTopKDensity(c, ranks, grads, ref, ref.step - c.warmupSteps);
      sum = compressedSum(chosen, ranks, grads, ref, ref.step - c.warmupSteps);
    } else {
      sum = compressedSum(c, ranks, grads, ref, ref.step - c.warmupSteps);
    }
    ++ref.step;
    cpu::sgdMomentum(ref.w.data(), nullptr, sum.data(), kN, kLr, 0.0f, 0.0f);
  }
  return ref;
}

// ---------------------------------------------------------------- N ranks

// max |got - want| <= 1e-5 max |want| (elementwise when want is all zeros).
void expectNear(const std::vector<float> &got, const std::vector<float> &want,
                const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double maxDiff = 0, maxAbs = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (d > maxDiff || std::isnan(d)) {
      maxDiff = std::isnan(d) ? INFINITY : d;
      worst = i;
    }
    maxAbs = std::max(maxAbs, std::fabs(static_cast<double>(want[i])));
  }
  EXPECT_LE(maxDiff, 1e-5 * std::max(maxAbs, 1e-30))
      << what << ": element " << worst << " is " << got[worst] << ", the reference " << want[worst]
      << " (max |reference| " << maxAbs << ")";
}

// Trains codecPlan(ranks, c) for kSteps steps on `ranks` ranks and expects
// w, the codec's state rows and its step counter to be the reference's.
// Trains `spec` for `steps` steps on `ranks` ranks and saves a checkpoint
// of every rank's variables in `dir`.
void trainAndSave(const PlanSpec &spec, int ranks, int steps, const std::string &dir) {
  auto loaded = loadPlanBuffer(build(spec));
  ASSERT_TRUE(loaded) << loaded.status().message();
  test::ActorSystem sys;
  test::TwoPhaseSave save(ranks, dir);
  std::vector<std::string> errors =
      test::runRanks(sys.system, loaded->plan(), ranks, [&](int r, Executor &exec) {
        RowData data;
        Status s = exec.run("train", &data, 0, 0, steps, nullptr);
        return s ? save.save(r, exec) : s;
      });
  for (int r = 0; r < ranks; ++r)
    ASSERT_EQ(errors[r], "") << "rank " << r;
}

void expectRanksMatchReference(const CodecSpec &c, int ranks) {
  const PlanSpec spec = codecPlan(ranks, c);
  test::TempDir tmp("sbpflow_codec");
  const std::string dir = tmp.path() + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(trainAndSave(spec, ranks, kSteps, dir));

  const Reference ref = referenceRun(spec, c, ranks, kSteps);
  const std::vector<float> w0 = initialValues(spec, 0);
  std::vector<float> w = test::readCheckpointed<float>(dir, "w");
  ASSERT_NO_FATAL_FAILURE(expectNear(w, ref.w, "w"));
  // The run moved w: the comparison is not of two initial values.
  double moved = 0;
  for (int64_t i = 0; i < kN; ++i)
    moved = std::max(moved, std::fabs(static_cast<double>(ref.w[i]) - w0[i]));
  EXPECT_GT(moved, 1e-3);
  if (ops::codecStateCount(c.kind, c.momentum) >= 1)
    expectNear(test::readCheckpointed<float>(dir, "g.codec.s0"), ref.s0, "state 0");
  if (ops::codecStateCount(c.kind, c.momentum) >= 2)
    expectNear(test::readCheckpointed<float>(dir, "g.codec.s1"), ref.s1, "state 1");
  if (c.beta2 > 0)
    expectNear(test::readCheckpointed<float>(dir, "g.codec.s2"), ref.s2, "state 2");
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "g.codec.step"), std::vector<int32_t>{kSteps});
}

// A codec of `kind` on codecPlan's state and step variables.
CodecSpec codec(plan::Codec kind, float momentum = 0.0f, float beta2 = 0.0f) {
  CodecSpec c;
  c.kind = kind;
  c.momentum = momentum;
  c.beta2 = beta2;
  const std::vector<int> rows = {1, 2, 4}; // codecPlan's state variables
  c.state.assign(rows.begin(), rows.begin() + ops::codecStateCount(kind, momentum, beta2));
  c.step = 3;
  return c;
}

CodecSpec topk() {
  CodecSpec c = codec(plan::Codec::TopK);
  c.density = 0.2f;
  return c;
}
CodecSpec dgc() {
  CodecSpec c = codec(plan::Codec::Dgc, 0.9f);
  c.density = 0.1f;
  return c;
}
// One scale per tensor (the paper's), and per bucket of 5 with the SGD's
// momentum compressed.
CodecSpec sign() {
  CodecSpec c = codec(plan::Codec::Sign);
  c.bucket = 1 << 20;
  return c;
}
CodecSpec signMomentum() {
  CodecSpec c = codec(plan::Codec::Sign, 0.9f);
  c.bucket = 5;
  return c;
}
CodecSpec randomk() {
  CodecSpec c = codec(plan::Codec::RandomK);
  c.density = 0.3f;
  c.seed = 11;
  return c;
}
CodecSpec qsgd() {
  CodecSpec c = codec(plan::Codec::Qsgd);
  c.bits = 4;
  c.bucket = 8;
  c.seed = 5;
  return c;
}
CodecSpec powerSgd() {
  CodecSpec c = codec(plan::Codec::PowerSgd);
  c.rank = 2;
  c.seed = 3;
  return c;
}
CodecSpec topk2bit() {
  CodecSpec c = codec(plan::Codec::TopK2Bit);
  c.density = 0.3f;
  return c;
}
// SparseLoCo's: 2 of each chunk of 8 (35 elements: four chunks of 8 and one
// of 3, whose one pair is its largest), the residual decaying by 0.9.
CodecSpec sparseLoCo() {
  CodecSpec c = topk2bit();
  c.density = 0.25f;
  c.chunk = 8;
  c.decay = 0.9f;
  return c;
}
// As CCLoco averages: each index over the ranks that sent it.
CodecSpec sparseLoCoOverSenders() {
  CodecSpec c = sparseLoCo();
  c.meanOverSenders = true;
  return c;
}
// EDiT's weighted average (temperature 0.5) of the gradients, clipped to
// norm 0.05 (the sums here are larger: the clip binds).
CodecSpec edit() {
  CodecSpec c = codec(plan::Codec::Edit);
  c.temperature = 0.5f;
  c.clip = 0.05f;
  return c;
}
// A-EDiT's: half of each weight from the steps, read from the codec's own
// step counter (variable 3; equal on every rank).
CodecSpec editByStepsToo() {
  CodecSpec c = edit();
  c.stepWeight = 0.5f;
  c.innerSteps = 3;
  return c;
}
// Under AdamW (DGC, top-k plain and 2-bit): two dense exchanges of the
// AdamW update, then its sparse accumulation, clipped locally; the state
// rows are DGC's m, v, s or top-k's residual, m, s.
CodecSpec adamCodec(plan::Codec kind) {
  CodecSpec c = codec(kind, 0.9f, 0.99f);
  c.eps = 1e-8f;
  c.density = 0.2f;
  c.warmupSteps = 2;
  c.clip = 2.0f;
  return c;
}
// DGC's through its sparsity warm-up (epochs of 3 exchanges).
CodecSpec dgcAdam() {
  CodecSpec c = adamCodec(plan::Codec::Dgc);
  c.density = 0.05f;
  c.epochSteps = 3;
  return c;
}
// Two dense exchanges, then DGC's sparsity warm-up (3 exchanges an epoch:
// densities 0.25, 0.0625, then 0.05) with local clipping.
CodecSpec dgcWarmup() {
  CodecSpec c = dgc();
  c.density = 0.05f;
  c.warmupSteps = 2;
  c.epochSteps = 3;
  c.clip = 2.0f;
  return c;
}

} // namespace

TEST(CodecExecutor, TopKTwoRanks) { expectRanksMatchReference(topk(), 2); }
TEST(CodecExecutor, TopKFourRanks) { expectRanksMatchReference(topk(), 4); }
TEST(CodecExecutor, DgcTwoRanks) { expectRanksMatchReference(dgc(), 2); }
TEST(CodecExecutor, DgcFourRanks) { expectRanksMatchReference(dgc(), 4); }
TEST(CodecExecutor, RandomKTwoRanks) { expectRanksMatchReference(randomk(), 2); }
TEST(CodecExecutor, RandomKFourRanks) { expectRanksMatchReference(randomk(), 4); }
TEST(CodecExecutor, QsgdTwoRanks) { expectRanksMatchReference(qsgd(), 2); }
TEST(CodecExecutor, QsgdFourRanks) { expectRanksMatchReference(qsgd(), 4); }
TEST(CodecExecutor, SignTwoRanks) { expectRanksMatchReference(sign(), 2); }
TEST(CodecExecutor, SignFourRanks) { expectRanksMatchReference(sign(), 4); }
TEST(CodecExecutor, SignWithMomentumTwoRanks) { expectRanksMatchReference(signMomentum(), 2); }
TEST(CodecExecutor, SignWithMomentumFourRanks) { expectRanksMatchReference(signMomentum(), 4); }
TEST(CodecExecutor, PowerSgdTwoRanks) { expectRanksMatchReference(powerSgd(), 2); }
TEST(CodecExecutor, PowerSgdFourRanks) { expectRanksMatchReference(powerSgd(), 4); }
TEST(CodecExecutor, TopK2BitTwoRanks) { expectRanksMatchReference(topk2bit(), 2); }
TEST(CodecExecutor, TopK2BitFourRanks) { expectRanksMatchReference(topk2bit(), 4); }
TEST(CodecExecutor, ChunkedTopK2BitWithDecayTwoRanks) {
  expectRanksMatchReference(sparseLoCo(), 2);
}
TEST(CodecExecutor, ChunkedTopK2BitWithDecayFourRanks) {
  expectRanksMatchReference(sparseLoCo(), 4);
}
TEST(CodecExecutor, ChunkedTopK2BitOverSendersTwoRanks) {
  expectRanksMatchReference(sparseLoCoOverSenders(), 2);
}
TEST(CodecExecutor, ChunkedTopK2BitOverSendersFourRanks) {
  expectRanksMatchReference(sparseLoCoOverSenders(), 4);
}
TEST(CodecExecutor, EditWeightedAndClippedTwoRanks) { expectRanksMatchReference(edit(), 2); }
TEST(CodecExecutor, EditWeightedAndClippedFourRanks) { expectRanksMatchReference(edit(), 4); }
TEST(CodecExecutor, EditWeightedByStepsTooTwoRanks) {
  expectRanksMatchReference(editByStepsToo(), 2);
}
TEST(CodecExecutor, EditWeightedByStepsTooFourRanks) {
  expectRanksMatchReference(editByStepsToo(), 4);
}
TEST(CodecExecutor, DgcWarmupTwoRanks) { expectRanksMatchReference(dgcWarmup(), 2); }
TEST(CodecExecutor, DgcWarmupFourRanks) { expectRanksMatchReference(dgcWarmup(), 4); }
TEST(CodecExecutor, DgcUnderAdamWTwoRanks) { expectRanksMatchReference(dgcAdam(), 2); }
TEST(CodecExecutor, DgcUnderAdamWFourRanks) { expectRanksMatchReference(dgcAdam(), 4); }
TEST(CodecExecutor, TopKUnderAdamWTwoRanks) {
  expectRanksMatchReference(adamCodec(plan::Codec::TopK), 2);
}
TEST(CodecExecutor, TopK2BitUnderAdamWFourRanks) {
  expectRanksMatchReference(adamCodec(plan::Codec::TopK2Bit), 4);
}

// ---------------------------------------------------------------- PowerSGD buckets

namespace {

// Two matrices in one PowerSGD task (as sbp-bucket-gradients fuses them):
// w [kC, kD] and v [kC, kE], each trained on 0.5 ||x w||^2 (gradient x^T x w,
// a partial sum). Variables: 0 w, 1 v, 2-3 w's residual and Q, 4-5 v's, 6
// the step counter; the task's state lists w's, then v's.
constexpr int64_t kE = 3;

PlanSpec powerSgdBucketPlan(int ranks, const CodecSpec &codec) {
  PlanSpec spec;
  std::vector<int> rankList(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    rankList[r] = r;
  spec.placements = {{"cpu", rankList, {ranks}}};
  auto state = [&](const char *name, int64_t cols, uint64_t seed) {
    return VariableSpec{name, {ranks, cols}, 0, {S(0)}, plan::InitKind::Uniform, -0.2f, 0.2f, seed};
  };
  spec.variables = {{"w", {kC, kD}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 7},
                    {"v", {kC, kE}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 11},
                    state("w.codec.residual", kC * kD, 8),
                    state("w.codec.q", kD * codec.rank, 9),
                    state("v.codec.residual", kC * kE, 12),
                    state("v.codec.q", kE * codec.rank, 13),
                    {"codec.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32}};
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kC}, {S(0)}},                 // 0
      {"w", {kC, kD}, {B()}, plan::DType::F32, 0}, // 1
      {"v", {kC, kE}, {B()}, plan::DType::F32, 1}, // 2
      {"yw", {kBatch, kD}, {S(0)}},                // 3
      {"yv", {kBatch, kE}, {S(0)}},                // 4
      {"gw", {kC, kD}, {P()}},                     // 5
      {"gv", {kC, kE}, {P()}},                     // 6
      {"gw.sum", {kC, kD}, {B()}},                 // 7
      {"gv.sum", {kC, kE}, {B()}},                 // 8
  };
  using K = plan::OpKind;
  auto matmul = [](const char *name, std::vector<int> in, int out, bool transA) {
    TaskSpec t = makeTask(name, K::MatMul, std::move(in), {out}, plan::OpAttrs::MatMulAttrs);
    t.transA = transA;
    return t;
  };
  TaskSpec allReduce =
      makeTask("bucket.allreduce", K::AllReduce, {5, 6}, {7, 8}, plan::OpAttrs::CollectiveAttrs);
  allReduce.codec = codec;
  allReduce.codec.present = true;
  allReduce.codec.state = {2, 3, 4, 5};
  allReduce.codec.step = 6;
  auto sgd = [](const char *name, int grad, int param) {
    TaskSpec t = makeTask(name, K::SgdMomentum, {grad}, {}, plan::OpAttrs::SgdAttrs);
    t.lr = kLr;
    t.param = param;
    return t;
  };
  prog.tasks = {inputTask("input.x", 0, "x"),
                makeTask("w", K::Parameter, {}, {1}),
                makeTask("v", K::Parameter, {}, {2}),
                matmul("w.matmul", {0, 1}, 3, false),
                matmul("v.matmul", {0, 2}, 4, false),
                matmul("w.grad", {0, 3}, 5, true),
                matmul("v.grad", {0, 4}, 6, true),
                allReduce,
                sgd("sgd.w", 7, 0),
                sgd("sgd.v", 8, 1)};
  prog.inputs = {{"x", 0}};
  spec.programs.push_back(prog);
  finalize(spec);
  // The updates must not start before the forward matmuls have read w and v.
  auto &program = spec.programs[0];
  const int last = static_cast<int>(program.tasks.size());
  program.registers.push_back({3, -1, {last - 2}, 1});
  program.registers.push_back({4, -1, {last - 1}, 1});
  return spec;
}

// The bucket's reference: every rank's two gradients from its rows, the dense
// sums during the warm-up, then powerSgdSum for w (Q draws from 0) and v
// (from kD * rank: the task's draws continue), then SGD.
struct BucketReference {
  std::vector<float> w, v, ws0, ws1, vs0, vs1;
};

BucketReference bucketReference(const PlanSpec &spec, const CodecSpec &c, int ranks, int steps) {
  BucketReference ref{initialValues(spec, 0), initialValues(spec, 1), initialValues(spec, 2),
                      initialValues(spec, 3), initialValues(spec, 4), initialValues(spec, 5)};
  const int64_t wq = kD * c.rank, vq = kE * c.rank;
  for (int step = 0; step < steps; ++step) {
    std::vector<std::vector<float>> gw, gv;
    for (int r = 0; r < ranks; ++r) {
      const Chunk rows = balancedChunk(kBatch, ranks, r);
      std::vector<float> x(rows.size * kC), yw(rows.size * kD), yv(rows.size * kE);
      std::vector<float> w(kC * kD), v(kC * kE);
      for (int64_t i = 0; i < rows.size; ++i)
        for (int64_t j = 0; j < kC; ++j)
          x[i * kC + j] = sample(step, rows.begin + i, j);
      cpu::matmul(x.data(), ref.w.data(), yw.data(), rows.size, kD, kC, false, false);
      cpu::matmul(x.data(), ref.v.data(), yv.data(), rows.size, kE, kC, false, false);
      cpu::matmul(x.data(), yw.data(), w.data(), kC, kD, rows.size, true, false);
      cpu::matmul(x.data(), yv.data(), v.data(), kC, kE, rows.size, true, false);
      gw.push_back(std::move(w));
      gv.push_back(std::move(v));
    }
    std::vector<float> sw(kC * kD, 0.0f), sv(kC * kE, 0.0f);
    if (step < c.warmupSteps) {
      for (int r = 0; r < ranks; ++r) {
        for (int64_t i = 0; i < kC * kD; ++i)
          sw[i] += gw[r][i];
        for (int64_t i = 0; i < kC * kE; ++i)
          sv[i] += gv[r][i];
      }
    } else {
      auto rowsOf = [&](std::vector<float> &state, int64_t cols) {
        std::vector<float *> p;
        for (int r = 0; r < ranks; ++r)
          p.push_back(state.data() + r * cols);
        return p;
      };
      const int64_t count = step - c.warmupSteps;
      powerSgdSum(c, 0, kC, kD, gw, rowsOf(ref.ws0, kC * kD), rowsOf(ref.ws1, wq), count,
                  sw.data());
      powerSgdSum(c, wq, kC, kE, gv, rowsOf(ref.vs0, kC * kE), rowsOf(ref.vs1, vq), count,
                  sv.data());
    }
    cpu::sgdMomentum(ref.w.data(), nullptr, sw.data(), kC * kD, kLr, 0.0f, 0.0f);
    cpu::sgdMomentum(ref.v.data(), nullptr, sv.data(), kC * kE, kLr, 0.0f, 0.0f);
  }
  return ref;
}

void expectBucketMatchesReference(int ranks, int warmup) {
  SCOPED_TRACE(std::to_string(ranks) + " ranks, " + std::to_string(warmup) + " dense exchanges");
  CodecSpec c = powerSgd();
  c.warmupSteps = warmup;
  const PlanSpec spec = powerSgdBucketPlan(ranks, c);
  test::TempDir tmp("sbpflow_codec_bucket");
  const std::string dir = tmp.path() + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(trainAndSave(spec, ranks, kSteps, dir));
  const BucketReference ref = bucketReference(spec, c, ranks, kSteps);
  expectNear(test::readCheckpointed<float>(dir, "w"), ref.w, "w");
  expectNear(test::readCheckpointed<float>(dir, "v"), ref.v, "v");
  expectNear(test::readCheckpointed<float>(dir, "w.codec.residual"), ref.ws0, "w's residual");
  expectNear(test::readCheckpointed<float>(dir, "w.codec.q"), ref.ws1, "w's Q");
  expectNear(test::readCheckpointed<float>(dir, "v.codec.residual"), ref.vs0, "v's residual");
  expectNear(test::readCheckpointed<float>(dir, "v.codec.q"), ref.vs1, "v's Q");
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "codec.step"), std::vector<int32_t>{kSteps});
}

} // namespace

TEST(CodecExecutor, PowerSgdBucketOfTwoMatricesTwoRanks) { expectBucketMatchesReference(2, 2); }
TEST(CodecExecutor, PowerSgdBucketOfTwoMatricesFourRanks) { expectBucketMatchesReference(4, 2); }
TEST(CodecExecutor, PowerSgdBucketWithoutWarmupFourRanks) { expectBucketMatchesReference(4, 0); }

// ---------------------------------------------------------------- refusals

// The loader's message for `spec`, which it must refuse.
std::string refusal(const PlanSpec &spec) {
  auto loaded = loadPlanBuffer(build(spec));
  EXPECT_FALSE(loaded) << "the loader accepted the plan";
  return loaded ? "" : loaded.status().message();
}

void expectMentions(const std::string &message, const std::vector<std::string> &parts) {
  for (const std::string &part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

TEST(CodecExecutor, LoaderRefusesStateOfTheWrongShape) {
  PlanSpec rows = codecPlan(2, topk());
  rows.variables[1].shape = {3, kStateCols}; // a row per rank of a 3-rank job
  expectMentions(refusal(rows), {"g.allreduce", "state variable 'g.codec.s0' must be f32 [2, L]",
                                 "it is [3," + std::to_string(kStateCols) + "]"});
  PlanSpec replicated = codecPlan(2, topk());
  replicated.variables[1].sbp = {B()};
  expectMentions(refusal(replicated),
                 {"g.allreduce", "state variable 'g.codec.s0'", "split S(0)", "[B]"});
  PlanSpec wrongType = codecPlan(2, dgc());
  wrongType.variables[2].dtype = plan::DType::I32;
  wrongType.variables[2].init = plan::InitKind::Zeros;
  expectMentions(refusal(wrongType), {"g.allreduce", "state variable 'g.codec.s1' must be f32"});
  CodecSpec missingState = dgc();
  missingState.state = {1};
  expectMentions(refusal(codecPlan(2, missingState)),
                 {"g.allreduce", "keeps 2 state variables, the task names 1"});
}

TEST(CodecExecutor, LoaderRefusesAMissingOrWrongStepVariable) {
  CodecSpec noStep = topk();
  noStep.step = -1; // as a plan without one reads
  expectMentions(refusal(codecPlan(2, noStep)), {"g.allreduce", "step variable -1 out of range"});
  CodecSpec floatStep = topk();
  floatStep.step = 0; // w: f32 [7, 5]
  expectMentions(refusal(codecPlan(2, floatStep)),
                 {"g.allreduce", "step variable 'w' must be an i32 scalar"});
}

TEST(CodecExecutor, LoaderRefusesAStepWeightOutsideEditOrWithoutItsSteps) {
  CodecSpec onTopk = topk();
  onTopk.stepWeight = 0.5f;
  onTopk.innerSteps = 3;
  expectMentions(refusal(codecPlan(2, onTopk)),
                 {"g.allreduce", "step_weight is Edit's (A-EDiT's ratio, in (0, 1])"});
  CodecSpec noSteps = editByStepsToo();
  noSteps.innerSteps = -1;
  expectMentions(refusal(codecPlan(2, noSteps)),
                 {"g.allreduce", "needs an inner_steps variable, got -1"});
  CodecSpec floatSteps = editByStepsToo();
  floatSteps.innerSteps = 0; // w: f32 [7, 5]
  expectMentions(refusal(codecPlan(2, floatSteps)),
                 {"g.allreduce", "inner_steps variable 'w' must be an i32 scalar"});
}

TEST(CodecExecutor, LoaderRefusesABf16Gradient) {
  expectMentions(refusal(codecPlan(2, topk(), /*bf16Gradient=*/true)),
                 {"g.allreduce", "the gradient 'g.t' must be f32"});
}

TEST(CodecExecutor, LoaderRefusesDensityZero) {
  for (CodecSpec c : {topk(), dgc(), randomk(), topk2bit()}) {
    c.density = 0;
    expectMentions(refusal(codecPlan(2, c)), {"g.allreduce", "density must lie in (0, 1]"});
  }
}

TEST(CodecExecutor, LoaderRefusesChunkAndDecayOutsideTopK2BitOrOutOfRange) {
  CodecSpec onTopk = topk();
  onTopk.chunk = 8;
  CodecSpec tooLong = sparseLoCo();
  tooLong.chunk = 65537;
  CodecSpec noDecay = sparseLoCo();
  noDecay.decay = 0.0f;
  CodecSpec sendersOnTopk = topk();
  sendersOnTopk.meanOverSenders = true;
  expectMentions(refusal(codecPlan(2, sendersOnTopk)),
                 {"g.allreduce", "mean_over_senders is TopK2Bit's without L-GreCo"});
  for (const CodecSpec &c : {onTopk, tooLong, noDecay})
    expectMentions(refusal(codecPlan(2, c)),
                   {"g.allreduce", "chunk and decay are TopK2Bit's without L-GreCo"});
}

// L-GreCo over top-k densities {0.1, 0.2, 0.4} (default 0.2), deciding at
// exchange 12 from the gradients (with error feedback) of exchanges 2-11
// summed in its accumulator, then accumulating exchange 14: weights,
// residuals, accumulators, the summed table and the choices as the group's
// reference computes them, on 2 and 4 ranks.
void expectLgrecoMatchesReference(int ranks) {
  SCOPED_TRACE(std::to_string(ranks) + " ranks");
  CodecSpec c = topk();
  c.state = {1, 2}; // the residual, then L-GreCo's accumulator
  c.lgreco = LgrecoSpec{{0.1f, 0.2f, 0.4f}, 1, 0, 1, 12};
  const int steps = 15;
  const PlanSpec spec = codecPlan(ranks, c);
  test::TempDir tmp("sbpflow_codec");
  const std::string dir = tmp.path() + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(trainAndSave(spec, ranks, steps, dir));

  const Reference ref = referenceRun(spec, c, ranks, steps);
  ASSERT_EQ(ref.table.size(), 6u);
  EXPECT_GT(ref.table[1], 0.0f); // a table with something in it
  expectNear(test::readCheckpointed<float>(dir, "lgreco.errors"), ref.table, "errors");
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "lgreco.choice"),
            std::vector<int32_t>{ref.choice});
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "lgreco.previous"),
            std::vector<int32_t>{ref.previous});
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "lgreco.pending"), std::vector<int32_t>{0});
  expectNear(test::readCheckpointed<float>(dir, "w"), ref.w, "w");
  expectNear(test::readCheckpointed<float>(dir, "g.codec.s0"), ref.s0, "residual");
  expectNear(test::readCheckpointed<float>(dir, "g.codec.s1"), ref.s1, "accumulator");
}

TEST(CodecExecutor, LgrecoMeasuresAndDecidesAsTheReferenceTwoRanks) {
  expectLgrecoMatchesReference(2);
}
TEST(CodecExecutor, LgrecoMeasuresAndDecidesAsTheReferenceFourRanks) {
  expectLgrecoMatchesReference(4);
}

TEST(CodecExecutor, LoaderRefusesASignBucketOfZeroAndAMomentumElsewhere) {
  CodecSpec noBucket = sign();
  noBucket.bucket = 0;
  expectMentions(refusal(codecPlan(2, noBucket)),
                 {"g.allreduce", "sign needs a positive bucket, got 0"});
  CodecSpec topkMomentum = topk();
  topkMomentum.momentum = 0.9f;
  expectMentions(refusal(codecPlan(2, topkMomentum)),
                 {"g.allreduce", "only DGC and sign keep a momentum"});
  CodecSpec signClip = signMomentum();
  signClip.clip = 1.0f;
  expectMentions(refusal(codecPlan(2, signClip)), {"g.allreduce", "only DGC and Edit clip"});
}

TEST(CodecExecutor, LoaderRefusesAdamWMomentsElsewhereOrOutOfRange) {
  CodecSpec randomkAdam = randomk();
  randomkAdam.beta2 = 0.99f;
  randomkAdam.eps = 1e-8f;
  expectMentions(
      refusal(codecPlan(2, randomkAdam)),
      {"g.allreduce", "beta2 and eps are DGC's and top-k's under AdamW", "got beta2 0.99"});
  CodecSpec noEps = dgcAdam();
  noEps.eps = 0.0f;
  expectMentions(refusal(codecPlan(2, noEps)), {"g.allreduce", "eps > 0"});
  // Without its third state variable (the second moment).
  CodecSpec twoStates = dgcAdam();
  twoStates.state = {1, 2};
  expectMentions(refusal(codecPlan(2, twoStates)),
                 {"g.allreduce", "keeps 3 state variables, the task names 2"});
}

TEST(CodecExecutor, LoaderRefusesABucketOutsidePowerSgdOrWithoutEveryState) {
  CodecSpec topkBucket = topk();
  topkBucket.density = 0.5f;
  PlanSpec spec = powerSgdBucketPlan(2, topkBucket);
  spec.programs[0].tasks[7].codec.state = {2, 4};
  expectMentions(refusal(spec), {"bucket.allreduce", "a compressed all-reduce takes one gradient "
                                                     "(several only under PowerSGD), not 2"});
  PlanSpec missing = powerSgdBucketPlan(2, powerSgd());
  missing.programs[0].tasks[7].codec.state = {2, 3, 4};
  expectMentions(refusal(missing),
                 {"bucket.allreduce", "keeps 4 state variables, the task names 3"});
}

// L-GreCo over a PowerSGD task of two matrices (ranks 1 or 2, deciding every
// 3 exchanges): w and v are rows `layer` and `layer` + 1 of its 2-layer
// table, each with its accumulator after its residual and Q.
PlanSpec lgrecoBucketPlan(int ranks, int layer) {
  CodecSpec c = powerSgd(); // rank 2, the largest candidate
  PlanSpec spec = powerSgdBucketPlan(ranks, c);
  auto add = [&](VariableSpec v) {
    spec.variables.push_back(std::move(v));
    return static_cast<int>(spec.variables.size()) - 1;
  };
  const int wAcc = add({"w.codec.acc", {ranks, kC * kD}, 0, {S(0)}});
  const int vAcc = add({"v.codec.acc", {ranks, kC * kE}, 0, {S(0)}});
  CodecSpec &codec = spec.programs[0].tasks[7].codec;
  codec.state = {2, 3, wAcc, 4, 5, vAcc};
  codec.lgreco = LgrecoSpec{{1.0f, 2.0f}, 1, layer, 2, 3};
  addLgrecoVariables(spec, *codec.lgreco);
  return spec;
}

TEST(CodecExecutor, LoaderRefusesLgrecoRowsPastItsTable) {
  expectMentions(refusal(lgrecoBucketPlan(2, 1)),
                 {"bucket.allreduce", "L-GreCo needs 0 <= layer, layer + gradients (2) <= layers"});
}

// Both matrices measure their candidates and the table is decided over the
// two ranks: after 8 steps (2 dense, decisions at exchanges 3 and 6) the
// table holds both rows' errors and payload sizes, and the choices are
// candidates.
TEST(CodecExecutor, LgrecoDecidesForEachMatrixOfAPowerSgdTask) {
  const PlanSpec spec = lgrecoBucketPlan(2, 0);
  test::TempDir tmp("sbpflow_codec_lgreco_bucket");
  const std::string dir = tmp.path() + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(trainAndSave(spec, 2, kSteps, dir));
  const std::vector<float> table = test::readCheckpointed<float>(dir, "lgreco.errors");
  ASSERT_EQ(table.size(), 8u);
  for (int layer = 0; layer < 2; ++layer) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    const float *row = table.data() + 4 * layer; // errors of ranks 1, 2; then bytes
    EXPECT_GT(row[0], row[1]) << "rank 1 should lose more than rank 2";
    EXPECT_GT(row[1], 0.0f);
    EXPECT_LT(row[2], row[3]) << "rank 1 should send fewer bytes than rank 2";
  }
  for (int32_t chosen : test::readCheckpointed<int32_t>(dir, "lgreco.choice"))
    EXPECT_TRUE(chosen == 0 || chosen == 1) << chosen;
  EXPECT_EQ(test::readCheckpointed<int32_t>(dir, "codec.step"), std::vector<int32_t>{kSteps});
}

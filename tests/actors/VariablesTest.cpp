// Counter-based variable initialisation (plan.fbs: Init): any region of a
// variable equals the same region cut from the whole tensor, on every layout
// (uneven splits too), through initRegion and through initVariableShards on
// plans; uniform and normal draws have the right moments; the seed matters.
#include "actors/Variables.h"
#include "kernels/Philox.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

// An Init table, kept alive with its buffer.
class InitTable {
public:
  InitTable(plan::InitKind kind, float a, float b, uint64_t seed) {
    fbb_.Finish(plan::CreateInit(fbb_, kind, a, b, seed));
  }
  const plan::Init &operator*() const {
    return *flatbuffers::GetRoot<plan::Init>(fbb_.GetBufferPointer());
  }

private:
  flatbuffers::FlatBufferBuilder fbb_;
};

// The elements of `region` of the dense row-major `whole`, by index
// arithmetic.
std::vector<float> cut(const std::vector<float> &whole, const Shape &shape, const Region &region) {
  std::vector<float> out;
  const int64_t n = regionElements(region);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, offset = 0, stride = 1;
    for (int64_t a = static_cast<int64_t>(shape.size()) - 1; a >= 0; --a) {
      offset += (region[a].begin + rest % region[a].size) * stride;
      rest /= region[a].size;
      stride *= shape[a];
    }
    out.push_back(whole[static_cast<size_t>(offset)]);
  }
  return out;
}

struct Layout {
  NdSbp sbp;
  std::vector<int64_t> hierarchy;
};

SbpDim Split(int axis) { return SbpDim{SbpKind::Split, axis}; }
const SbpDim Bcast{SbpKind::Broadcast, 0};

TEST(VariableInit, AnyRegionIsThatRegionOfTheWholeTensor) {
  struct Case {
    Shape shape;
    std::vector<Layout> layouts;
  };
  const std::vector<Case> cases = {
      {{7, 5},
       {{{Split(0)}, {2}},
        {{Split(1)}, {3}},
        {{Split(0), Split(1)}, {2, 2}},
        {{Bcast, Split(0)}, {2, 3}},
        {{Split(0)}, {8}},
        {{Split(1), Split(0)}, {4, 2}}}},
      {{13}, {{{Split(0)}, {4}}, {{Split(0), Split(0)}, {2, 3}}}},
      {{3, 4, 5}, {{{Split(2)}, {3}}, {{Split(1), Split(2)}, {3, 2}}, {{Split(0), Bcast}, {2, 2}}}},
      {{}, {{{Bcast}, {3}}}},
  };
  for (plan::InitKind kind : {plan::InitKind::Uniform, plan::InitKind::Normal,
                              plan::InitKind::Constant, plan::InitKind::Zeros}) {
    const InitTable init(kind, -0.5f, 2.0f, 0x1234567890abcdefull);
    for (const Case &c : cases) {
      const std::vector<float> whole = initGlobalTensor(*init, elementCount(c.shape));
      std::vector<float> direct(whole.size());
      initRegion(*init, c.shape, wholeRegion(c.shape), direct.data());
      ASSERT_EQ(std::memcmp(direct.data(), whole.data(), whole.size() * 4), 0) << toString(c.shape);
      for (const Layout &l : c.layouts) {
        int64_t ranks = 1;
        for (int64_t h : l.hierarchy)
          ranks *= h;
        for (int64_t r = 0; r < ranks; ++r) {
          const Region region =
              localRegion(c.shape, l.sbp, l.hierarchy, hierarchyCoord(l.hierarchy, r));
          std::vector<float> got(static_cast<size_t>(regionElements(region)), -99.f);
          initRegion(*init, c.shape, region, got.data());
          EXPECT_EQ(got, cut(whole, c.shape, region))
              << toString(c.shape) << " " << toString(l.sbp) << " rank " << r;
        }
      }
      // An arbitrary box, and an empty one.
      if (c.shape.size() == 2) {
        const Region box = {Chunk{2, 3}, Chunk{1, 4}};
        std::vector<float> got(12);
        initRegion(*init, c.shape, box, got.data());
        EXPECT_EQ(got, cut(whole, c.shape, box));
        initRegion(*init, c.shape, {Chunk{3, 0}, Chunk{0, 5}}, nullptr);
      }
    }
  }
}

// The executors' path: a rank's shards of a plan's variables, on 1, 2 and
// 2 x 2 ranks, equal the same regions of the one-rank plan's variables.
TEST(VariableInit, EveryRankOfEveryLayoutHoldsTheSameWeights) {
  auto plan = [](std::vector<int> ranks, std::vector<int> hierarchy, std::vector<Sbp> wSbp,
                 std::vector<Sbp> bSbp) {
    PlanSpec spec;
    spec.placements = {{"cpu", ranks, hierarchy}};
    spec.variables = {
        {"w", {9, 7}, 0, wSbp, plan::InitKind::Normal, 0, 0.02f, 11},
        {"b", {7}, 0, bSbp, plan::InitKind::Uniform, -0.1f, 0.1f, 12},
        {"s", {}, 0, std::vector<Sbp>(hierarchy.size(), B()), plan::InitKind::Constant, 3}};
    auto loaded = loadPlanBuffer(build(spec));
    EXPECT_TRUE(loaded) << loaded.status().message();
    return loaded.take();
  };
  const LoadedPlan one = plan({0}, {1}, {B()}, {B()});
  const std::vector<VariableShard> ref = initVariableShards(*one.plan(), 0);
  std::vector<std::vector<float>> whole;
  for (const VariableShard &v : ref)
    whole.emplace_back(static_cast<const float *>(v.data()),
                       static_cast<const float *>(v.data()) + v.elements());
  const std::vector<Shape> shapes = {{9, 7}, {7}, {}};
  for (const LoadedPlan &p :
       {plan({0, 1}, {2}, {S(0)}, {S(0)}), plan({1, 0, 3, 2}, {2, 2}, {S(0), S(1)}, {B(), S(0)}),
        plan({0, 1, 2}, {3}, {S(1)}, {B()})}) {
    const int ranks = static_cast<int>(p->placements()->Get(0)->ranks()->size());
    for (int r = 0; r < ranks; ++r) {
      const std::vector<VariableShard> shards = initVariableShards(*p.plan(), r);
      for (size_t v = 0; v < shards.size(); ++v) {
        ASSERT_TRUE(shards[v].local);
        const std::vector<float> got(static_cast<const float *>(shards[v].data()),
                                     static_cast<const float *>(shards[v].data()) +
                                         shards[v].elements());
        EXPECT_EQ(got, cut(whole[v], shapes[v], shards[v].region))
            << "variable " << v << " rank " << r << " of " << ranks;
      }
    }
  }
}

// Moments on 2^20 elements: the mean within 6 standard errors, the standard
// deviation within 6 of its standard errors (sigma / sqrt(2 n) for a normal,
// (b - a) / sqrt(180 n) for a uniform's), the range respected.
TEST(VariableInit, UniformAndNormalMoments) {
  const int64_t n = 1 << 20;
  auto moments = [](const std::vector<float> &x) {
    double m = 0, v = 0;
    for (float e : x)
      m += e;
    m /= static_cast<double>(x.size());
    for (float e : x)
      v += (e - m) * (e - m);
    return std::pair<double, double>{m, std::sqrt(v / static_cast<double>(x.size()))};
  };
  const std::vector<float> u = initGlobalTensor(*InitTable(plan::InitKind::Uniform, -1, 3, 5), n);
  for (float e : u)
    ASSERT_TRUE(e >= -1.f && e < 3.f) << e;
  auto [um, us] = moments(u);
  const double sd = 4 / std::sqrt(12.0); // of U(-1, 3)
  EXPECT_NEAR(um, 1.0, 6 * sd / std::sqrt(double(n)));
  EXPECT_NEAR(us, sd, 6 * 4 / std::sqrt(180.0 * n));
  const std::vector<float> z = initGlobalTensor(*InitTable(plan::InitKind::Normal, 2, 0.5f, 6), n);
  auto [zm, zs] = moments(z);
  EXPECT_NEAR(zm, 2.0, 6 * 0.5 / std::sqrt(double(n)));
  EXPECT_NEAR(zs, 0.5, 6 * 0.5 / std::sqrt(2.0 * n));
  // Tails: P(|z| > 3 sigma) = 0.27%.
  int64_t tail = 0;
  for (float e : z)
    tail += std::fabs(e - 2.0) > 1.5;
  EXPECT_NEAR(static_cast<double>(tail) / n, 0.0027, 0.0006);
}

TEST(VariableInit, TheSeedChangesTheValues) {
  for (plan::InitKind kind : {plan::InitKind::Uniform, plan::InitKind::Normal}) {
    const std::vector<float> a = initGlobalTensor(*InitTable(kind, 0, 1, 1), 4096);
    const std::vector<float> b = initGlobalTensor(*InitTable(kind, 0, 1, 2), 4096);
    const std::vector<float> hi = initGlobalTensor(*InitTable(kind, 0, 1, 1ull << 32 | 1), 4096);
    int same = 0, sameHi = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      same += a[i] == b[i];
      sameHi += a[i] == hi[i];
    }
    EXPECT_LE(same, 2);
    EXPECT_LE(sameHi, 2); // the seed's high word is part of the key
  }
}

// The formula of plan.fbs, element by element: Philox4x32-10 with the
// counter's top bit set, 53-bit uniforms from words (0, 1) and (2, 3).
TEST(VariableInit, FollowsThePlanFormula) {
  const uint64_t seed = 0xfeedface12345678ull;
  const std::vector<float> u =
      initGlobalTensor(*InitTable(plan::InitKind::Uniform, -2, 6, seed), 50);
  const std::vector<float> z = initGlobalTensor(*InitTable(plan::InitKind::Normal, 1, 3, seed), 50);
  for (uint64_t g = 0; g < 50; ++g) {
    const PhiloxBlock r = philox4x32_10(static_cast<uint32_t>(g), (g >> 32) | 0x80000000u, 0, 0,
                                        static_cast<uint32_t>(seed), seed >> 32);
    auto unit = [](uint32_t lo, uint32_t hi) {
      return std::ldexp(static_cast<double>(((uint64_t(hi) << 32) | lo) >> 11), -53);
    };
    EXPECT_EQ(u[g], static_cast<float>(-2 + 8 * unit(r.word[0], r.word[1]))) << g;
    EXPECT_EQ(z[g],
              static_cast<float>(1 + 3 * std::sqrt(-2 * std::log(1 - unit(r.word[0], r.word[1]))) *
                                         std::cos(2 * M_PI * unit(r.word[2], r.word[3]))))
        << g;
    // Never dropout's words: its counter's second word is below 2^31.
    EXPECT_NE(r.word[0], philox4x32_10(static_cast<uint32_t>(g), 0, 0, 0,
                                       static_cast<uint32_t>(seed), seed >> 32)
                             .word[0]);
  }
}

// Moved from tests/plan/PlanLoaderTest.cpp with initGlobalTensor; the first
// element follows the counter-based Init (plan version 4).
TEST(PlanLoader, InitIsDeterministic) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(plan::CreateInit(fbb, plan::InitKind::Uniform, -1.0f, 1.0f, 42));
  const plan::Init *init = flatbuffers::GetRoot<plan::Init>(fbb.GetBufferPointer());
  std::vector<float> a = initGlobalTensor(*init, 1000);
  std::vector<float> b = initGlobalTensor(*init, 1000);
  EXPECT_EQ(a, b);
  double mean = 0;
  for (float v : a) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
    mean += v;
  }
  EXPECT_NEAR(mean / 1000, 0.0, 0.1);
  // plan.fbs's Init fixes the first element exactly: Philox4x32-10 of
  // counter (0, 2^31, 0, 0) and key (42, 0), u from words 0 and 1.
  const PhiloxBlock r = philox4x32_10(0, 0x80000000u, 0, 0, 42, 0);
  const uint64_t bits = (static_cast<uint64_t>(r.word[1]) << 32) | r.word[0];
  EXPECT_FLOAT_EQ(a[0], static_cast<float>(-1.0 + 2.0 * ((bits >> 11) * 0x1.0p-53)));

  flatbuffers::FlatBufferBuilder fbb2;
  fbb2.Finish(plan::CreateInit(fbb2, plan::InitKind::Normal, 2.0f, 0.5f, 9));
  std::vector<float> n =
      initGlobalTensor(*flatbuffers::GetRoot<plan::Init>(fbb2.GetBufferPointer()), 20000);
  double m = 0, v = 0;
  for (float x : n)
    m += x;
  m /= n.size();
  for (float x : n)
    v += (x - m) * (x - m);
  v /= n.size();
  EXPECT_NEAR(m, 2.0, 0.02);
  EXPECT_NEAR(std::sqrt(v), 0.5, 0.02);
}

} // namespace

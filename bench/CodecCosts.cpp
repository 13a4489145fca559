// What each gradient codec's own work costs on this machine, per gradient
// element: encode plus the decode of two ranks' payloads (the exchange
// excluded), for sbp-compress-gradients' `auto` (its codec-costs option reads
// this JSON). Median of repeated runs on a random gradient.
//
// usage: codec_costs [--elements N] [--repeat R] > costs.json
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace sbpflow;

namespace {

double medianSeconds(int repeat, const std::function<void()> &work) {
  std::vector<double> times;
  for (int r = 0; r < repeat; ++r) {
    auto start = std::chrono::steady_clock::now();
    work();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  int64_t n = 1 << 20;
  int repeat = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--elements") == 0)
      n = std::atoll(argv[i + 1]);
    else if (std::strcmp(argv[i], "--repeat") == 0)
      repeat = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: codec_costs [--elements N] [--repeat R]\n");
      return 2;
    }
  }
  if (n < 1024 || repeat < 1) {
    std::fprintf(stderr, "codec_costs: need --elements >= 1024 and --repeat >= 1\n");
    return 2;
  }
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> grad(n), residual(n), u(n), v(n), out(n), work(n);
  for (float &g : grad)
    g = normal(gen);
  std::vector<int32_t> order(n);
  const int64_t k = std::max<int64_t>(1, n / 1000); // density 0.001
  std::vector<int32_t> idx(2 * k);
  std::vector<float> val(2 * k), unsent(k);
  std::vector<uint8_t> codes(n), packed(2 * n);
  std::vector<float> scales(2 * cpu::bucketCount(n, 512));
  const auto per = [&](double seconds) { return seconds / static_cast<double>(n); };

  const double topk = per(medianSeconds(repeat, [&] {
    cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), idx.data(), val.data());
    std::fill(out.begin(), out.end(), 0.0f);
    for (int r = 0; r < 2; ++r)
      cpu::scatterAddPairs(idx.data(), val.data(), k, 1.0f, out.data(), n);
  }));
  const double dgc = per(medianSeconds(repeat, [&] {
    cpu::dgcEncode(grad.data(), u.data(), v.data(), n, k, 0.9f, order.data(), idx.data(),
                   val.data());
    std::fill(out.begin(), out.end(), 0.0f);
    for (int r = 0; r < 2; ++r)
      cpu::scatterAddPairs(idx.data(), val.data(), k, 1.0f, out.data(), n);
  }));
  const double topk2bit = per(medianSeconds(repeat, [&] {
    cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), idx.data(), val.data());
    float table[cpu::kTwoBitTableFloats];
    cpu::twoBitEncode(val.data(), k, codes.data(), table, unsent.data());
    cpu::scatterAddPairs(idx.data(), unsent.data(), k, 1.0f, residual.data(), n);
    std::fill(out.begin(), out.end(), 0.0f);
    for (int r = 0; r < 2; ++r) {
      cpu::twoBitDecode(codes.data(), table, 1, k, val.data());
      cpu::scatterAddPairs(idx.data(), val.data(), k, 1.0f, out.data(), n);
    }
  }));
  const double randomk = per(medianSeconds(repeat, [&] {
    cpu::randomkIndices(n, k, 1, 1, order.data(), idx.data());
    cpu::randomkEncode(grad.data(), n, k, idx.data(), val.data());
    std::fill(out.begin(), out.end(), 0.0f);
    cpu::scatterAddPairs(idx.data(), val.data(), k, 1.0f, out.data(), n);
  }));
  const double qsgd = per(medianSeconds(repeat, [&] {
    cpu::qsgdEncode(grad.data(), n, 7, 512, 1, 1, codes.data(), scales.data());
    cpu::qsgdPackCodes(codes.data(), n, 4, packed.data());
    std::fill(out.begin(), out.end(), 0.0f);
    for (int r = 0; r < 2; ++r) {
      cpu::qsgdUnpackCodes(packed.data(), n, 4, codes.data());
      cpu::qsgdDecode(codes.data(), scales.data(), 1, n, 7, 512, 1.0f, out.data());
    }
  }));
  const double sign = per(medianSeconds(repeat, [&] {
    cpu::signEncode(grad.data(), residual.data(), n, 512, codes.data(), scales.data());
    std::fill(out.begin(), out.end(), 0.0f);
    cpu::signDecode(codes.data(), scales.data(), 1, n, 512, 1.0f, out.data());
    cpu::signDecode(codes.data(), scales.data(), 1, n, 512, 1.0f, out.data());
  }));
  // PowerSGD rank 4 on a square-ish matrix view; per element and rank.
  const int64_t cols = 1024, rows = n / cols, rank = 4;
  std::vector<float> q(cols * rank, 0.5f), p(rows * rank);
  const double powersgd =
      per(medianSeconds(
          repeat,
          [&] {
            for (int64_t i = 0; i < rows * cols; ++i)
              work[i] = grad[i] + residual[i];
            cpu::matmul(work.data(), q.data(), p.data(), rows, rank, cols, false, false);
            cpu::orthogonalizeColumns(p.data(), rows, rank);
            cpu::matmul(work.data(), p.data(), q.data(), cols, rank, rows, true, false);
            cpu::matmul(p.data(), q.data(), out.data(), rows, cols, rank, false, true);
            for (int64_t i = 0; i < rows * cols; ++i)
              residual[i] = work[i] - out[i];
            cpu::matmul(p.data(), q.data(), out.data(), rows, cols, rank, false, true);
          })) /
      static_cast<double>(rank);
  std::printf("{\"elements\": %lld, \"topk\": %.4g, \"dgc\": %.4g, \"topk2bit\": %.4g, "
              "\"randomk\": %.4g, \"qsgd\": %.4g, \"sign\": %.4g, \"powersgd\": %.4g}\n",
              static_cast<long long>(n), topk, dgc, topk2bit, randomk, qsgd, sign, powersgd);
  return 0;
}

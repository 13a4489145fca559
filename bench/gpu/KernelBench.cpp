// GPU kernel benchmark: what the hardware gives (device-to-device copy
// bandwidth, cuBLASLt bf16 and fp32 GEMM throughput: the peak that model
// FLOP utilisation is measured against) and what our kernels reach beside
// it (bytes/s for the memory-bound ones, FLOP/s for attention), on the char
// GPT's shapes and on GPT-2 small's. CUDA events time each; mean of 20
// after 5 warm-ups.
//
// usage: gpu_kernel_bench [--json FILE]
#include "kernels/cuda/Attention.h"
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Gemm.h"
#include "kernels/cuda/Normalization.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

using namespace sbpflow;
using namespace sbpflow::cuda;

namespace {

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "gpu_kernel_bench: %s\n", what.c_str());
  std::exit(1);
}
void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    die(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(const Status &s) {
  if (!s)
    die(s.message());
}

// Device memory for the whole benchmark, zero-filled (timings on zeros can
// flatter tensor cores; inputs are filled with a constant != 0).
struct Buffer {
  void *p = nullptr;
  explicit Buffer(size_t bytes) {
    check(cudaMalloc(&p, bytes), "cudaMalloc");
    check(cudaMemset(p, 0, bytes), "cudaMemset");
  }
  ~Buffer() { cudaFree(p); }
  template <class T> T *as() const { return static_cast<T *>(p); }
};

// Mean seconds of `work` (enqueued on `stream`) over 20 runs after 5 warm-ups.
double timeIt(cudaStream_t stream, const std::function<void()> &work) {
  cudaEvent_t begin, end;
  check(cudaEventCreate(&begin), "event");
  check(cudaEventCreate(&end), "event");
  for (int i = 0; i < 5; ++i)
    work();
  check(cudaEventRecord(begin, stream), "record");
  const int runs = 20;
  for (int i = 0; i < runs; ++i)
    work();
  check(cudaEventRecord(end, stream), "record");
  check(cudaEventSynchronize(end), "synchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, begin, end), "elapsed");
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  return ms / 1e3 / runs;
}

struct Row {
  std::string what, shape;
  double seconds, amount; // bytes or FLOPs per run
  bool flops;
  double rate() const { return amount / seconds; }
};

} // namespace

int main(int argc, char **argv) {
  std::string jsonPath;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json" && i + 1 < argc)
      jsonPath = argv[++i];
    else
      die("unknown argument '" + a + "' (usage: gpu_kernel_bench [--json FILE])");
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    die("no CUDA device");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "device properties");
  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "stream");
  auto blas = Blas::create();
  check(blas.status());
  std::vector<Row> rows;

  // The floor for memory-bound kernels: a copy reads and writes each byte.
  {
    const size_t bytes = size_t{1} << 30;
    Buffer a(bytes), b(bytes);
    double s = timeIt(stream, [&] {
      check(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, stream), "copy");
    });
    rows.push_back({"device copy (the bandwidth floor)", "1 GiB", s, 2.0 * bytes, false});
  }
  // GEMM peaks and the shapes our models run.
  struct Gemm {
    GemmType type;
    int64_t m, n, k;
    const char *what;
  };
  for (Gemm g : {Gemm{GemmType::Bf16, 8192, 8192, 8192, "bf16 GEMM (peak)"},
                 Gemm{GemmType::F32, 4096, 4096, 4096, "fp32 GEMM (no TF32)"},
                 Gemm{GemmType::Bf16, 768, 512, 128, "bf16 GEMM, char GPT MLP up"},
                 Gemm{GemmType::Bf16, 8192, 3072, 768, "bf16 GEMM, GPT-2 small MLP up"},
                 Gemm{GemmType::Bf16, 8192, 768, 3072, "bf16 GEMM, GPT-2 small MLP down"}}) {
    size_t el = g.type == GemmType::Bf16 ? 2 : 4;
    Buffer a(g.m * g.k * el), b(g.k * g.n * el), c(g.m * g.n * el);
    if (g.type == GemmType::Bf16) {
      check(fill(a.as<bf16>(), 0.01f, g.m * g.k, stream));
      check(fill(b.as<bf16>(), 0.02f, g.k * g.n, stream));
    } else {
      check(fill(a.as<float>(), 0.01f, g.m * g.k, stream));
      check(fill(b.as<float>(), 0.02f, g.k * g.n, stream));
    }
    double s = timeIt(stream, [&] {
      check(blas->run(g.type, a.p, b.p, c.p, g.m, g.n, g.k, false, false, stream));
    });
    rows.push_back({g.what,
                    std::to_string(g.m) + "x" + std::to_string(g.n) + "x" + std::to_string(g.k), s,
                    2.0 * g.m * g.n * g.k, true});
  }
  // Memory-bound kernels at GPT-2 small's activation size (8192 tokens x 768).
  {
    const int64_t r = 8192, c = 768, n = r * c;
    Buffer x(n * 4), y(n * 4), z(n * 4), gamma(c * 4), beta(c * 4);
    check(fill(gamma.as<float>(), 1.f, c, stream));
    double s =
        timeIt(stream, [&] { check(add(x.as<float>(), y.as<float>(), z.as<float>(), n, stream)); });
    rows.push_back({"add fp32", "8192x768", s, 3.0 * n * 4, false});
    s = timeIt(stream, [&] { check(gelu(x.as<bf16>(), y.as<bf16>(), n, stream)); });
    rows.push_back({"gelu bf16", "8192x768", s, 2.0 * n * 2, false});
    s = timeIt(stream, [&] {
      check(layerNorm(x.as<bf16>(), gamma.as<float>(), beta.as<float>(), y.as<bf16>(), r, c, 1e-5f,
                      stream));
    });
    rows.push_back({"layer norm bf16", "8192x768", s, 2.0 * n * 2, false});
    Buffer scratch(layerNormGradScratch(r, c) * 4), dg(c * 4), db(c * 4);
    s = timeIt(stream, [&] {
      check(layerNormGrad(x.as<bf16>(), y.as<bf16>(), gamma.as<float>(), z.as<bf16>(),
                          dg.as<float>(), db.as<float>(), r, c, 1e-5f, scratch.as<float>(),
                          stream));
    });
    rows.push_back({"layer norm backward bf16", "8192x768", s, 3.0 * n * 2, false});
  }
  // Attention: causal, so half the T x T scores; backward counts 2.5x forward.
  for (auto [b, t, h, d] : {std::array<int64_t, 4>{12, 64, 4, 32}, {8, 1024, 12, 64}}) {
    const int64_t n = b * t * h * d;
    Buffer q(n * 2), k(n * 2), v(n * 2), y(n * 2), dy(n * 2), dq(n * 2), dk(n * 2), dv(n * 2),
        lse(causalAttentionLseSize(b, t, h) * 4);
    check(fill(q.as<bf16>(), 0.1f, n, stream));
    check(fill(k.as<bf16>(), 0.1f, n, stream));
    check(fill(v.as<bf16>(), 0.1f, n, stream));
    check(fill(dy.as<bf16>(), 0.1f, n, stream));
    const double flops = 4.0 * b * h * t * t * d / 2;
    std::string shape = "B" + std::to_string(b) + " T" + std::to_string(t) + " H" +
                        std::to_string(h) + " D" + std::to_string(d);
    double s = timeIt(stream, [&] {
      check(causalAttention(q.as<bf16>(), k.as<bf16>(), v.as<bf16>(), y.as<bf16>(), lse.as<float>(),
                            b, t, h, d, stream));
    });
    rows.push_back({"causal attention bf16", shape, s, flops, true});
    s = timeIt(stream, [&] {
      check(causalAttentionGrad(dy.as<bf16>(), q.as<bf16>(), k.as<bf16>(), v.as<bf16>(),
                                y.as<bf16>(), lse.as<float>(), dq.as<bf16>(), dk.as<bf16>(),
                                dv.as<bf16>(), b, t, h, d, stream));
    });
    rows.push_back({"causal attention backward bf16", shape, s, 2.5 * flops, true});
  }
  check(cudaStreamSynchronize(stream), "synchronize");

  const double copy = rows[0].rate(), peak = rows[1].rate();
  std::printf("%s, %d SMs\n\n", prop.name, prop.multiProcessorCount);
  std::printf("| kernel | shape | time | rate | of the floor |\n|---|---|---|---|---|\n");
  for (const Row &r : rows)
    std::printf("| %s | %s | %.3f ms | %.1f %s | %.0f%% of %s |\n", r.what.c_str(), r.shape.c_str(),
                r.seconds * 1e3, r.flops ? r.rate() / 1e12 : r.rate() / 1e9,
                r.flops ? "TFLOP/s" : "GB/s", 100.0 * r.rate() / (r.flops ? peak : copy),
                r.flops ? "bf16 GEMM peak" : "copy bandwidth");
  if (!jsonPath.empty()) {
    std::ofstream out(jsonPath);
    out << "{\"device\":\"" << prop.name << "\",\"rows\":[";
    for (size_t i = 0; i < rows.size(); ++i)
      out << (i ? "," : "") << "{\"kernel\":\"" << rows[i].what << "\",\"shape\":\""
          << rows[i].shape << "\",\"ms\":" << rows[i].seconds * 1e3
          << ",\"rate\":" << rows[i].rate() << ",\"unit\":\"" << (rows[i].flops ? "FLOP/s" : "B/s")
          << "\"}";
    out << "]}\n";
    if (!out)
      die("cannot write " + jsonPath);
  }
  return 0;
}

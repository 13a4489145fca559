// Embedding lookups at runtime: rows of a [vocab, dim] table picked by i32
// ids, and the gradient's scatter-add into an f32 table. A rank may hold some
// rows of the table (vocabulary-parallel): ids outside them look up zeros.
#include "kernels/Checks.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Data.h"
#include "kernels/cuda/Dispatch.h"
#endif

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

struct EmbeddingWork {
  int64_t tableRows = 0, rowBegin = 0, vocab = 0, ids = 0, dim = 0;
};

// Embedding: in table, ids -> rows; its gradient: in dy, ids -> table.
StatusOr<EmbeddingWork> embeddingWork(const OpArgs &a) {
  const bool fwd = a.task.op() == K::Embedding;
  const TensorView *table = fwd ? a.in[0] : a.out[0];
  const TensorView *rows = fwd ? a.out[0] : a.in[0]; // [..., C]
  if (table->global.size() != 2)
    return Status::error(a.at + ": " + (fwd ? "table '" : "table gradient '") + table->name +
                         "' must be [V, C], is " + toString(table->global));
  const int64_t dim = table->local[1];
  if (elements(rows) != elements(a.in[1]) * dim)
    return Status::error(a.at + ": " + std::to_string(elements(a.in[1])) + " ids of width " +
                         std::to_string(dim) + " do not fill " + toString(rows->local));
  return EmbeddingWork{table->local[0], table->region[0].begin, table->global[0], elements(a.in[1]),
                       dim};
}

} // namespace

Status checkEmbedding(const OpArgs &a) { return statusOf(embeddingWork(a)); }
Status checkEmbeddingGrad(const OpArgs &a) { return statusOf(embeddingWork(a)); }

StatusOr<Kernel> cpuEmbedding(const OpArgs &args) {
  return checkedF32(args, embeddingWork, [](const OpArgs &a, EmbeddingWork w) {
    const float *table = data<float>(a.in[0]);
    const int32_t *ids = data<int32_t>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return launch(a, [=] {
      const int64_t bad =
          cpu::embedding(table, w.tableRows, w.rowBegin, w.vocab, ids, w.ids, w.dim, y);
      if (bad >= 0)
        return Status::error("token id " + std::to_string(ids[bad]) + " at position " +
                             std::to_string(bad) + " is outside the vocabulary of " +
                             std::to_string(w.vocab));
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuEmbeddingGrad(const OpArgs &args) {
  return checkedF32(args, embeddingWork, [](const OpArgs &a, EmbeddingWork w) {
    const float *dy = data<float>(a.in[0]);
    const int32_t *ids = data<int32_t>(a.in[1]);
    float *dtable = data<float>(a.out[0]);
    return always(
        [=] { cpu::embeddingGrad(dy, ids, w.ids, w.dim, dtable, w.tableRows, w.rowBegin); });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

// The table (and the rows looked up) or dy is T; the table's gradient F32.
StatusOr<Kernel> cudaEmbedding(const OpArgs &a) {
  return cuda::typedKernel(a, embeddingWork, [&](auto e, EmbeddingWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const int32_t *ids = data<int32_t>(a.in[1]);
    int64_t *bad = a.errorFlag([=, at = a.at](int64_t row) {
      return at + ": token id " + std::to_string(cuda::readI32(ids + row)) + " at position " +
             std::to_string(row) + " is outside the vocabulary of " + std::to_string(w.vocab);
    });
    const T *table = data<T>(a.in[0]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] {
      return cuda::embedding<T>(table, w.tableRows, w.rowBegin, w.vocab, ids, w.ids, w.dim, y, bad,
                                s);
    });
  });
}

StatusOr<Kernel> cudaEmbeddingGrad(const OpArgs &a) {
  return cuda::typedKernel(a, embeddingWork, [&](auto e, EmbeddingWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *dy = data<T>(a.in[0]);
    const int32_t *ids = data<int32_t>(a.in[1]);
    float *dtable = data<float>(a.out[0]);
    return launch(a, [=] {
      return cuda::embeddingGrad<T>(dy, ids, w.ids, w.dim, dtable, w.tableRows, w.rowBegin, s);
    });
  });
}

#endif

} // namespace sbpflow::ops

// Row lookups at runtime: embedding rows of a [vocab, dim] table picked by
// i32 ids, and the gradient's scatter-add into an f32 table (a rank may hold
// some rows of the table, vocabulary-parallel: ids outside them look up
// zeros); rows of an activation gathered by index and scattered back
// (message passing over a graph's edges).
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

// GatherRows: x [N, C], idx [E] -> y [E, C]; ScatterRows: y [E, C], idx [E]
// -> out [N, C]. `cols` is this rank's C (the channels may be split).
struct RowsWork {
  int64_t rows = 0, cols = 0, edges = 0;
};

StatusOr<RowsWork> rowsWork(const OpArgs &a) {
  const bool gather = a.task.op() == K::GatherRows;
  const TensorView *table = gather ? a.in[0] : a.out[0];
  const TensorView *perEdge = gather ? a.out[0] : a.in[0];
  if (table->global.size() != 2 || perEdge->global.size() != 2 || a.in[1]->global.size() != 1)
    return Status::error(a.at + ": needs " + (gather ? "x" : "the result") + " [N, C], " +
                         (gather ? "the result" : "y") + " [E, C] and idx [E], got " +
                         toString(table->global) + ", " + toString(perEdge->global) + " and " +
                         toString(a.in[1]->global));
  RowsWork w{table->local[0], table->local[1], elements(a.in[1])};
  if (table->local[0] != table->global[0])
    return Status::error(a.at + ": the rows of '" + table->name + "' are split across ranks");
  if (perEdge->local[0] != w.edges || perEdge->local[1] != w.cols)
    return Status::error(a.at + ": " + std::to_string(w.edges) + " indices and rows of " +
                         std::to_string(w.cols) + " do not make " + toString(perEdge->local));
  return w;
}

// A gather is an embedding whose table this rank holds whole.
StatusOr<EmbeddingWork> gatherWork(const OpArgs &a) {
  auto w = rowsWork(a);
  if (!w)
    return w.status();
  return EmbeddingWork{w->rows, 0, w->rows, w->edges, w->cols};
}

// The words of an id outside the table (BadId).
std::string badTokenId(int64_t position, int32_t id, int64_t vocab) {
  return "token id " + std::to_string(id) + " at position " + std::to_string(position) +
         " is outside the vocabulary of " + std::to_string(vocab);
}

std::string badIndex(int64_t e, int32_t index, int64_t rows) {
  return "index " + std::to_string(index) + " of row " + std::to_string(e) + " is outside the " +
         std::to_string(rows) + " rows";
}

using LookupWork = StatusOr<EmbeddingWork> (*)(const OpArgs &);

// The lookup of Embedding and GatherRows: rows of the table in0 picked by the
// i32 ids in1 into out0.
StatusOr<Kernel> cpuLookup(const OpArgs &args, LookupWork work, BadId badId) {
  return checkedF32(args, work, [badId](const OpArgs &a, EmbeddingWork w) {
    const float *table = data<float>(a.in[0]);
    const int32_t *ids = data<int32_t>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return launch(a, [=] {
      const int64_t bad =
          cpu::embedding(table, w.tableRows, w.rowBegin, w.vocab, ids, w.ids, w.dim, y);
      return idStatus(bad, ids, badId, w.vocab);
    });
  });
}

} // namespace

Status checkEmbedding(const OpArgs &a) { return statusOf(embeddingWork(a)); }
Status checkEmbeddingGrad(const OpArgs &a) { return statusOf(embeddingWork(a)); }
Status checkGatherRows(const OpArgs &a) { return statusOf(rowsWork(a)); }
Status checkScatterRows(const OpArgs &a) { return statusOf(rowsWork(a)); }

StatusOr<Kernel> cpuEmbedding(const OpArgs &a) { return cpuLookup(a, embeddingWork, badTokenId); }
StatusOr<Kernel> cpuGatherRows(const OpArgs &a) { return cpuLookup(a, gatherWork, badIndex); }

StatusOr<Kernel> cpuEmbeddingGrad(const OpArgs &args) {
  return checkedF32(args, embeddingWork, [](const OpArgs &a, EmbeddingWork w) {
    const float *dy = data<float>(a.in[0]);
    const int32_t *ids = data<int32_t>(a.in[1]);
    float *dtable = data<float>(a.out[0]);
    return always(
        [=] { cpu::embeddingGrad(dy, ids, w.ids, w.dim, dtable, w.tableRows, w.rowBegin); });
  });
}

StatusOr<Kernel> cpuScatterRows(const OpArgs &args) {
  return checkedF32(args, rowsWork, [](const OpArgs &a, RowsWork w) {
    const float *y = data<float>(a.in[0]);
    const int32_t *idx = data<int32_t>(a.in[1]);
    float *out = data<float>(a.out[0]);
    return launch(a, [=] {
      // embeddingGrad skips indices outside the table; nobody checked them.
      for (int64_t e = 0; e < w.edges; ++e)
        if (idx[e] < 0 || idx[e] >= w.rows)
          return Status::error(badIndex(e, idx[e], w.rows));
      cpu::embeddingGrad(y, idx, w.edges, w.cols, out, w.rows, 0);
      return Status::ok();
    });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

namespace {
// cpuLookup on the GPU: the table and the rows looked up are T.
StatusOr<Kernel> cudaLookup(const OpArgs &a, LookupWork work, BadId badId) {
  return cuda::typedKernel(a, work, [&](auto e, EmbeddingWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const int32_t *ids = data<int32_t>(a.in[1]);
    int64_t *bad = cuda::badIdFlag(a, ids, badId, w.vocab);
    const T *table = data<T>(a.in[0]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] {
      return cuda::embedding<T>(table, w.tableRows, w.rowBegin, w.vocab, ids, w.ids, w.dim, y, bad,
                                s);
    });
  });
}
} // namespace

StatusOr<Kernel> cudaEmbedding(const OpArgs &a) { return cudaLookup(a, embeddingWork, badTokenId); }
StatusOr<Kernel> cudaGatherRows(const OpArgs &a) { return cudaLookup(a, gatherWork, badIndex); }

// dy is T; the table's gradient F32.
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

// The sum is accumulated in fp32: into the result itself, or for a bf16
// result into scratch, rounded once.
StatusOr<Kernel> cudaScatterRows(const OpArgs &a) {
  return cuda::typedKernel(a, rowsWork, [&](auto e, RowsWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const int32_t *idx = data<int32_t>(a.in[1]);
    int64_t *bad = cuda::badIdFlag(a, idx, badIndex, w.rows);
    const T *y = data<T>(a.in[0]);
    const bool f32 = a.out[0]->dtype == plan::DType::F32;
    float *sum = f32 ? data<float>(a.out[0])
                     : static_cast<float *>(a.scratch(static_cast<size_t>(w.rows * w.cols) * 4));
    void *out = a.out[0]->data;
    const plan::DType dtype = a.out[0]->dtype;
    return launch(a, [=, device = a.device, stream = a.stream]() -> Status {
      // Nothing before a scatter checked its indices: an embedding of width
      // 0 checks them (and writes nothing); embeddingGrad skips bad ones.
      if (Status st = cuda::embedding<T>(nullptr, 0, 0, w.rows, idx, w.edges, 0, nullptr, bad, s);
          !st)
        return st;
      if (Status st = cuda::embeddingGrad<T>(y, idx, w.edges, w.cols, sum, w.rows, 0, s); !st)
        return st;
      return f32 ? Status::ok()
                 : device->cast(sum, plan::DType::F32, out, dtype, w.rows * w.cols, stream);
    });
  });
}

#endif

} // namespace sbpflow::ops

// The device-independent half of building a compute task's kernel: each
// check validates a task against its tensors (as this rank sees them) and
// returns the sizes and attributes its kernel needs. The CPU builder
// (ComputeKernels.cpp) and the CUDA one (CudaExecutor.cpp) turn these into
// closures, so both reject a plan with the same words.
#pragma once

#include "actors/ComputeKernels.h"
#include "runtime/data/DataSource.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {

using Operands = std::vector<const TensorView *>;

// A task's operands must be all there: `at` names the rank and task.
Status checkOperandCount(const plan::Task &task, const Operands &in, const std::string &at);

// Input: where this rank's rows of a data field go.
struct InputWork {
  std::string field;
  int64_t globalBatch = 0, rowBegin = 0, rowCount = 0;
  int64_t sample = 0; // elements per sample
  FieldType type = FieldType::F32;
  std::string planShape;
};
StatusOr<InputWork> checkInput(const plan::Task &task, const Operands &out, const std::string &at);
// At step time: whether `data` holds the field as the plan reads it.
Status checkDataField(const InputWork &w, const DataSource *data, const std::string &at);

struct FillWork {
  float value = 0;
  int64_t n = 0;
};
FillWork checkFill(const plan::Task &task, const Operands &out);

// c[m, n] = op(a)[m, k] * op(b)[k, n].
struct MatMulWork {
  int64_t m = 0, n = 0, k = 0;
  bool transA = false, transB = false;
};
StatusOr<MatMulWork> checkMatMul(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at);

// A tensor as rows of `cols` elements.
struct RowsWork {
  int64_t rows = 0, cols = 0;
};
// BiasAdd: x is [rows, bias size].
StatusOr<RowsWork> checkBiasAdd(const Operands &in, const Operands &out, const std::string &at);
// BiasGelu: x and bias as BiasAdd's, into out0 (x + bias); out1 (its GELU)
// has out0's shape.
StatusOr<RowsWork> checkBiasGelu(const Operands &in, const Operands &out, const std::string &at);
// ReduceRows: the output is one row.
StatusOr<RowsWork> checkReduceRows(const Operands &in, const Operands &out, const std::string &at);
// SoftmaxXent, CountCorrect, SoftmaxXentGrad: logits rows, labels, classes.
StatusOr<RowsWork> checkSoftmaxXent(const plan::Task &task, const Operands &in,
                                    const std::string &at);
// Softmax, SoftmaxGrad.
StatusOr<RowsWork> checkSoftmax(const plan::Task &task, const Operands &in, const Operands &out,
                                const std::string &at);

// Element-wise ops over n elements: Add, ReluGrad, Relu, Gelu, GeluGrad,
// Reshape, Cast (the same element count in and out).
struct ElementwiseWork {
  int64_t n = 0;
};
StatusOr<ElementwiseWork> checkElementwise(const plan::Task &task, const Operands &in,
                                           const Operands &out, const std::string &at);

// Mean reduces n inputs, MeanGrad spreads over n outputs; divided by count.
struct MeanWork {
  int64_t n = 0, count = 0;
};
MeanWork checkMean(const plan::Task &task, const Operands &in, const Operands &out);

struct EmbeddingWork {
  int64_t tableRows = 0, rowBegin = 0, vocab = 0, ids = 0, dim = 0;
};
StatusOr<EmbeddingWork> checkEmbedding(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at);

struct LayerNormWork {
  int64_t rows = 0, cols = 0;
  float eps = 1e-5f;
};
StatusOr<LayerNormWork> checkLayerNorm(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at);

// This rank's heads of [batch, T, heads * headDim] operands.
struct AttentionWork {
  int64_t batch = 0, T = 0, localHeads = 0, headDim = 0;
};
// `maxHeadDim` > 0: the largest head a backend's kernel takes.
StatusOr<AttentionWork> checkAttention(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at,
                                       int64_t maxHeadDim = 0);

// The mask depends on the global position, so that every sharding drops the
// same elements.
struct DropoutWork {
  std::vector<int64_t> global, begin, size;
  float p = 0;
  uint64_t seed = 0;
};
StatusOr<DropoutWork> checkDropout(const plan::Task &task, const Operands &in, const Operands &out,
                                   const std::string &at);

struct TransposeWork {
  Shape shape; // the input's
  std::vector<int> perm;
};
StatusOr<TransposeWork> checkTranspose(const plan::Task &task, const Operands &in,
                                       const Operands &out, const std::string &at);

// Narrow copies `part` out of `whole` at `offset`; NarrowGrad zeroes
// `whole` and copies `part` back in.
struct NarrowWork {
  Shape whole, part, offset;
  int64_t n = 0; // elements of the result
};
StatusOr<NarrowWork> checkNarrow(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at);

// Concat copies input i into the result at offsets[i].
struct ConcatWork {
  Shape result;
  std::vector<Shape> parts, offsets;
};
StatusOr<ConcatWork> checkConcat(const plan::Task &task, const Operands &in, const Operands &out,
                                 const std::string &at);

// SquareSum of n elements, or ClipScale of a scalar by maxNorm.
struct ScalarWork {
  int64_t n = 0;
  float maxNorm = 0;
};
StatusOr<ScalarWork> checkScalarOp(const plan::Task &task, const Operands &in, const Operands &out,
                                   const std::string &at);

} // namespace sbpflow

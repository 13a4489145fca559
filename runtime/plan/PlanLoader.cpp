// Plan loading: flatbuffers verification, then the semantic checks that the
// executor relies on (indices in range, producers before consumers, arena
// bounds, collective order), each reported with the program/task/tensor name.
#include "runtime/plan/PlanLoader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

namespace sbpflow {
namespace {

std::string str(const flatbuffers::String *s) { return s ? s->str() : std::string("?"); }

template <typename T> size_t len(const flatbuffers::Vector<T> *v) { return v ? v->size() : 0; }

// Checks what tensors and variables share: placement, shape, nd-SBP.
Status checkTyped(const plan::Plan &p, const std::string &what, int placement,
                  const flatbuffers::Vector<int64_t> *shape,
                  const flatbuffers::Vector<const plan::SbpDim *> *sbp) {
  if (placement < 0 || placement >= static_cast<int>(len(p.placements())))
    return Status::error(what + ": placement " + std::to_string(placement) +
                         " out of range (plan has " + std::to_string(len(p.placements())) +
                         " placements)");
  if (len(shape) > kMaxTensorRank)
    return Status::error(what + ": " + std::to_string(len(shape)) + " axes, more than the " +
                         std::to_string(kMaxTensorRank) + " the runtime supports");
  int64_t elements = 1;
  for (size_t i = 0; i < len(shape); ++i) {
    if (shape->Get(i) < 0)
      return Status::error(what + ": negative dimension " + std::to_string(shape->Get(i)) +
                           " at axis " + std::to_string(i));
    // Sizes in bytes must fit in int64 everywhere downstream.
    if (__builtin_mul_overflow(elements, shape->Get(i), &elements) || elements > (int64_t{1} << 48))
      return Status::error(what + ": more than 2^48 elements");
  }
  size_t dims = len(p.placements()->Get(placement)->hierarchy());
  if (len(sbp) != dims)
    return Status::error(what + ": nd-SBP has " + std::to_string(len(sbp)) +
                         " dimensions but its placement hierarchy has " + std::to_string(dims));
  for (size_t i = 0; i < len(sbp); ++i) {
    const plan::SbpDim *d = sbp->Get(i);
    if (static_cast<int>(d->kind()) < 0 || d->kind() > plan::SbpKind::PartialMin)
      return Status::error(what + ": unknown SBP kind " +
                           std::to_string(static_cast<int>(d->kind())));
    if (d->kind() == plan::SbpKind::Split &&
        (d->axis() < 0 || d->axis() >= static_cast<int>(len(shape))))
      return Status::error(what + ": split axis " + std::to_string(d->axis()) +
                           " out of range for rank " + std::to_string(len(shape)));
  }
  return Status::ok();
}

bool needsAttrs(plan::OpKind op, plan::OpAttrs &type) {
  switch (op) {
  case plan::OpKind::Input:
    type = plan::OpAttrs::InputAttrs;
    return true;
  case plan::OpKind::Fill:
    type = plan::OpAttrs::FillAttrs;
    return true;
  case plan::OpKind::Mean:
  case plan::OpKind::MeanGrad:
    type = plan::OpAttrs::MeanAttrs;
    return true;
  case plan::OpKind::SgdMomentum:
    type = plan::OpAttrs::SgdAttrs;
    return true;
  case plan::OpKind::AllReduce:
  case plan::OpKind::AllGather:
  case plan::OpKind::ReduceScatter:
  case plan::OpKind::AllToAll:
    type = plan::OpAttrs::CollectiveAttrs;
    return true;
  case plan::OpKind::Slice:
  case plan::OpKind::ZeroOthers:
    // Optional: the compiler records the hierarchy dimension and axes of a
    // local boxing step too, but the SBPs of its tensors say all there is.
    type = plan::OpAttrs::CollectiveAttrs;
    return false;
  case plan::OpKind::AdamW:
    type = plan::OpAttrs::AdamWAttrs;
    return true;
  case plan::OpKind::LayerNorm:
  case plan::OpKind::LayerNormGrad:
    type = plan::OpAttrs::NormAttrs;
    return true;
  case plan::OpKind::CausalAttention:
  case plan::OpKind::CausalAttentionGrad:
    type = plan::OpAttrs::AttentionAttrs;
    return true;
  case plan::OpKind::Dropout:
    type = plan::OpAttrs::DropoutAttrs;
    return true;
  case plan::OpKind::Transpose:
    type = plan::OpAttrs::TransposeAttrs;
    return true;
  case plan::OpKind::Narrow:
  case plan::OpKind::NarrowGrad:
    type = plan::OpAttrs::NarrowAttrs;
    return true;
  case plan::OpKind::Concat:
    type = plan::OpAttrs::ConcatAttrs;
    return true;
  case plan::OpKind::ClipScale:
    type = plan::OpAttrs::ClipAttrs;
    return true;
  case plan::OpKind::MatMul:
    type = plan::OpAttrs::MatMulAttrs;
    return false; // optional: absent means no transposes
  default:
    type = plan::OpAttrs::NONE;
    return false;
  }
}

// Expected numbers of inputs and outputs per op: [min, max], max -1 for no
// bound.
struct Arity {
  int minIn, maxIn, minOut, maxOut;
};

Arity arity(plan::OpKind op) {
  using K = plan::OpKind;
  switch (op) {
  case K::Input:
  case K::Parameter:
  case K::Fill:
    return {0, 0, 1, 1};
  case K::MatMul:
  case K::BiasAdd:
  case K::Add:
  case K::ReluGrad:
  case K::SoftmaxXent:
  case K::CountCorrect:
  case K::Embedding:
  case K::EmbeddingGrad:
  case K::GeluGrad:
  case K::SoftmaxGrad:
    return {2, 2, 1, 1};
  case K::SoftmaxXentGrad:
  case K::LayerNorm:
  case K::CausalAttention:
    return {3, 3, 1, 1};
  case K::LayerNormGrad:
    return {3, 3, 3, 3};
  case K::BiasGelu:
    return {2, 2, 2, 2};
  case K::CausalAttentionGrad:
    return {4, 4, 3, 3};
  case K::Relu:
  case K::Mean:
  case K::MeanGrad:
  case K::ReduceRows:
  case K::Gelu:
  case K::Softmax:
  case K::Dropout:
  case K::Reshape:
  case K::Transpose:
  case K::Narrow:
  case K::NarrowGrad:
  case K::SquareSum:
  case K::ClipScale:
  case K::Cast:
  case K::AllGather:
  case K::ReduceScatter:
  case K::AllToAll:
  case K::Slice:
  case K::ZeroOthers:
    return {1, 1, 1, 1};
  case K::Concat:
    return {1, -1, 1, 1};
  case K::SgdMomentum:
  case K::AdamW:
    // The gradient and an optional scalar scale; outputs optional (a view of
    // the parameter at most).
    return {1, 2, 0, 1};
  case K::AllReduce:
    return {1, -1, 1, -1};
  }
  return {-1, -1, -1, -1};
}

std::string shapeText(const flatbuffers::Vector<int64_t> *shape) {
  return toString(toShape(shape));
}

// The element types of one op's tensors, one letter per input and output:
// T a float (F32 or BF16), the same T for every T of the task; F F32;
// I I32; A any type, the same for every A; W F32 or the task's T (matmul's
// and reduce_rows' result: a bf16 product may be accumulated into f32);
// C any float (cast). Mixed precision (bf16 activations, f32 master weights,
// losses and reductions) is expressed by these rules; kernels rely on them.
struct DtypeRule {
  const char *in;  // the last letter repeats for variadic inputs
  const char *out; // likewise for outputs
};

DtypeRule dtypeRule(plan::OpKind op) {
  using K = plan::OpKind;
  switch (op) {
  case K::Input:
    return {"", "A"};
  case K::Parameter:
  case K::Fill:
    return {"", "F"};
  case K::MatMul:
    return {"TT", "W"};
  case K::BiasAdd:
  case K::Add:
  case K::ReluGrad:
  case K::GeluGrad:
  case K::SoftmaxGrad:
  case K::BiasGelu:
    return {"TT", "T"};
  case K::Relu:
  case K::Gelu:
  case K::Softmax:
  case K::Dropout:
    return {"T", "T"};
  case K::SoftmaxXent:
  case K::CountCorrect:
    return {"TI", "F"};
  case K::SoftmaxXentGrad:
    return {"TIF", "T"};
  case K::Mean:
  case K::MeanGrad:
  case K::SquareSum:
  case K::ClipScale:
    return {"F", "F"};
  case K::ReduceRows:
    return {"T", "W"};
  case K::Embedding:
    return {"TI", "T"};
  case K::EmbeddingGrad:
    return {"TI", "F"};
  case K::LayerNorm:
    return {"TFF", "T"};
  case K::LayerNormGrad:
    return {"TTF", "TFF"};
  case K::CausalAttention:
    return {"TTT", "T"};
  case K::CausalAttentionGrad:
    return {"TTTT", "TTT"};
  case K::Cast:
    return {"C", "C"};
  case K::SgdMomentum:
  case K::AdamW:
    return {"FF", "F"};
  case K::Reshape:
  case K::Transpose:
  case K::Narrow:
  case K::NarrowGrad:
  case K::Concat:
  case K::AllReduce:
  case K::AllGather:
  case K::ReduceScatter:
  case K::AllToAll:
  case K::Slice:
  case K::ZeroOthers:
    return {"A", "A"};
  }
  return {"", ""};
}

Status checkOpDtypes(plan::OpKind op, const std::vector<const plan::Tensor *> &in,
                     const std::vector<const plan::Tensor *> &out, const std::string &kname) {
  const DtypeRule rule = dtypeRule(op);
  std::optional<plan::DType> t, a;
  auto isFloat = [](plan::DType d) { return d == plan::DType::F32 || d == plan::DType::BF16; };
  auto check = [&](const plan::Tensor *x, char role, const std::string &what) -> Status {
    const plan::DType d = x->dtype();
    auto bad = [&](const std::string &want) {
      return Status::error(kname + ": " + what + " '" + str(x->name()) + "' must be " + want +
                           ", is " + plan::EnumNameDType(d));
    };
    switch (role) {
    case 'F':
      return d == plan::DType::F32 ? Status::ok() : bad("F32");
    case 'I':
      return d == plan::DType::I32 ? Status::ok() : bad("I32");
    case 'C':
      return isFloat(d) ? Status::ok() : bad("F32 or BF16");
    case 'W':
      if (d == plan::DType::F32)
        return Status::ok();
      [[fallthrough]];
    case 'T':
      if (!isFloat(d))
        return bad("F32 or BF16");
      if (t && *t != d)
        return bad(std::string(plan::EnumNameDType(*t)) + " like the task's other operands");
      t = d;
      return Status::ok();
    default: // 'A'
      if (a && *a != d)
        return bad(std::string(plan::EnumNameDType(*a)) + " like the task's other tensors");
      a = d;
      return Status::ok();
    }
  };
  auto roleAt = [](const char *roles, size_t i) {
    size_t n = std::strlen(roles);
    return n == 0 ? 'A' : roles[std::min(i, n - 1)];
  };
  // Inputs first, so that T is fixed by the operands when a result may be W.
  for (size_t i = 0; i < in.size(); ++i)
    if (Status s = check(in[i], roleAt(rule.in, i), "input " + std::to_string(i)); !s)
      return s;
  for (size_t i = 0; i < out.size(); ++i)
    if (Status s = check(out[i], roleAt(rule.out, i), "output " + std::to_string(i)); !s)
      return s;
  return Status::ok();
}

// The checks of one op's tensors and attributes that the kernels rely on
// (element types, attribute ranges, shapes the attributes imply). `in` and
// `out` are the task's tensors, already range-checked.
Status checkOpSemantics(const plan::Plan &p, const plan::Task &task,
                        const std::vector<const plan::Tensor *> &in,
                        const std::vector<const plan::Tensor *> &out, const std::string &kname) {
  using K = plan::OpKind;
  const int nv = static_cast<int>(len(p.variables()));
  auto scalar = [&](const plan::Tensor *t, const std::string &what) {
    if (elementCount(toShape(t->shape())) != 1)
      return Status::error(kname + ": " + what + " '" + str(t->name()) + "' must be a scalar, is " +
                           shapeText(t->shape()));
    return Status::ok();
  };
  auto rankOf = [](const plan::Tensor *t) { return static_cast<int>(len(t->shape())); };
  auto variable = [&](int index, const std::string &what) -> StatusOr<const plan::Variable *> {
    if (index < 0 || index >= nv)
      return Status::error(kname + ": " + what + " variable " + std::to_string(index) +
                           " out of range (plan has " + std::to_string(nv) + " variables)");
    return p.variables()->Get(index);
  };
  // The optimiser's gradient (in0) and optional scale (in1).
  auto optimizerInputs = [&](const plan::Variable *w) -> Status {
    if (elementCount(toShape(w->shape())) != elementCount(toShape(in[0]->shape())))
      return Status::error(kname + ": gradient shape differs from variable '" + str(w->name()) +
                           "'");
    if (in.size() > 1)
      return scalar(in[1], "gradient scale");
    return Status::ok();
  };

  switch (task.op()) {
  case K::Embedding:
    if (rankOf(in[0]) != 2)
      return Status::error(kname + ": table '" + str(in[0]->name()) + "' must be [V, C], is " +
                           shapeText(in[0]->shape()));
    return Status::ok();
  case K::EmbeddingGrad:
    if (rankOf(out[0]) != 2)
      return Status::error(kname + ": table gradient '" + str(out[0]->name()) +
                           "' must be [V, C], is " + shapeText(out[0]->shape()));
    return Status::ok();
  case K::Cast:
    if (toShape(in[0]->shape()) != toShape(out[0]->shape()))
      return Status::error(kname + ": cast of " + shapeText(in[0]->shape()) + " into " +
                           shapeText(out[0]->shape()) + " changes the shape");
    return Status::ok();
  case K::LayerNorm:
  case K::LayerNormGrad: {
    float eps = task.attrs_as_NormAttrs()->eps();
    if (!(eps > 0.0f))
      return Status::error(kname + ": NormAttrs.eps must be positive, is " + std::to_string(eps));
    return Status::ok();
  }
  case K::CausalAttention:
  case K::CausalAttentionGrad: {
    int heads = task.attrs_as_AttentionAttrs()->heads();
    const plan::Tensor *q = task.op() == K::CausalAttention ? in[0] : in[1];
    if (rankOf(q) != 3)
      return Status::error(kname + ": q '" + str(q->name()) + "' must be [batch, T, C], is " +
                           shapeText(q->shape()));
    int64_t channels = q->shape()->Get(2);
    if (heads <= 0 || channels % heads != 0)
      return Status::error(kname + ": AttentionAttrs.heads " + std::to_string(heads) +
                           " must be positive and divide the " + std::to_string(channels) +
                           " channels");
    return Status::ok();
  }
  case K::Dropout: {
    float prob = task.attrs_as_DropoutAttrs()->p();
    if (!(prob >= 0.0f && prob < 1.0f))
      return Status::error(kname + ": DropoutAttrs.p must lie in [0, 1), is " +
                           std::to_string(prob));
    return Status::ok();
  }
  case K::Reshape:
    if (elementCount(toShape(in[0]->shape())) != elementCount(toShape(out[0]->shape())))
      return Status::error(kname + ": reshape of " + shapeText(in[0]->shape()) + " into " +
                           shapeText(out[0]->shape()) + " changes the element count");
    return Status::ok();
  case K::Transpose: {
    const auto *perm = task.attrs_as_TransposeAttrs()->perm();
    int rank = rankOf(in[0]);
    std::vector<bool> seen(rank, false);
    bool valid = static_cast<int>(len(perm)) == rank && rankOf(out[0]) == rank;
    for (size_t k = 0; valid && k < len(perm); ++k) {
      int a = perm->Get(k);
      valid = a >= 0 && a < rank && !seen[a] && out[0]->shape()->Get(k) == in[0]->shape()->Get(a);
      if (valid)
        seen[a] = true;
    }
    if (!valid)
      return Status::error(kname + ": TransposeAttrs.perm is not a permutation taking " +
                           shapeText(in[0]->shape()) + " to " + shapeText(out[0]->shape()));
    return Status::ok();
  }
  case K::Narrow:
  case K::NarrowGrad: {
    const plan::NarrowAttrs *a = task.attrs_as_NarrowAttrs();
    // Narrow: whole = in0, part = out0; NarrowGrad the other way round.
    const plan::Tensor *whole = task.op() == K::Narrow ? in[0] : out[0];
    const plan::Tensor *part = task.op() == K::Narrow ? out[0] : in[0];
    int rank = rankOf(whole), axis = a->axis();
    bool valid = rankOf(part) == rank && axis >= 0 && axis < rank && a->begin() >= 0;
    for (int d = 0; valid && d < rank; ++d)
      valid = d == axis ? a->begin() + part->shape()->Get(d) <= whole->shape()->Get(d)
                        : part->shape()->Get(d) == whole->shape()->Get(d);
    if (!valid)
      return Status::error(kname + ": NarrowAttrs (axis " + std::to_string(axis) + ", begin " +
                           std::to_string(a->begin()) + ") do not place " +
                           shapeText(part->shape()) + " inside " + shapeText(whole->shape()));
    return Status::ok();
  }
  case K::Concat: {
    int axis = task.attrs_as_ConcatAttrs()->axis(), rank = rankOf(out[0]);
    if (axis < 0 || axis >= rank)
      return Status::error(kname + ": ConcatAttrs.axis " + std::to_string(axis) +
                           " out of range for rank " + std::to_string(rank));
    int64_t total = 0;
    for (const plan::Tensor *t : in) {
      bool valid = rankOf(t) == rank;
      for (int d = 0; valid && d < rank; ++d)
        valid = d == axis || t->shape()->Get(d) == out[0]->shape()->Get(d);
      if (!valid)
        return Status::error(kname + ": operand '" + str(t->name()) + "' " + shapeText(t->shape()) +
                             " does not fit the result " + shapeText(out[0]->shape()) +
                             " off axis " + std::to_string(axis));
      total += t->shape()->Get(axis);
    }
    if (total != out[0]->shape()->Get(axis))
      return Status::error(kname + ": operands sum to " + std::to_string(total) + " on axis " +
                           std::to_string(axis) + ", the result has " +
                           std::to_string(out[0]->shape()->Get(axis)));
    return Status::ok();
  }
  case K::SquareSum:
    return scalar(out[0], "result");
  case K::ClipScale: {
    float maxNorm = task.attrs_as_ClipAttrs()->max_norm();
    if (!(maxNorm > 0.0f))
      return Status::error(kname + ": ClipAttrs.max_norm must be positive, is " +
                           std::to_string(maxNorm));
    if (Status s = scalar(in[0], "sum of squares"); !s)
      return s;
    return scalar(out[0], "result");
  }
  case K::SgdMomentum: {
    const plan::SgdAttrs *sgd = task.attrs_as_SgdAttrs();
    auto w = variable(sgd->param(), "param");
    if (!w)
      return w.status();
    if (sgd->momentum_buffer() < -1 || sgd->momentum_buffer() >= nv)
      return Status::error(kname + ": momentum_buffer variable " +
                           std::to_string(sgd->momentum_buffer()) + " out of range");
    for (int index : {sgd->param(), sgd->momentum_buffer()})
      if (index >= 0 && p.variables()->Get(index)->dtype() != plan::DType::F32)
        return Status::error(kname + ": variable '" + str(p.variables()->Get(index)->name()) +
                             "' must be f32");
    if (sgd->momentum() != 0.0f && sgd->momentum_buffer() < 0)
      return Status::error(kname + ": momentum " + std::to_string(sgd->momentum()) +
                           " without a momentum_buffer");
    return optimizerInputs(*w);
  }
  case K::AdamW: {
    const plan::AdamWAttrs *a = task.attrs_as_AdamWAttrs();
    auto w = variable(a->param(), "param");
    if (!w)
      return w.status();
    for (auto [index, what] : {std::pair<int, const char *>{a->m(), "m"}, {a->v(), "v"}}) {
      auto slot = variable(index, what);
      if (!slot)
        return slot.status();
      if (toShape((*slot)->shape()) != toShape((*w)->shape()))
        return Status::error(kname + ": " + what + " variable '" + str((*slot)->name()) +
                             "' differs in shape from the parameter '" + str((*w)->name()) + "'");
      if ((*slot)->dtype() != plan::DType::F32)
        return Status::error(kname + ": " + what + " variable '" + str((*slot)->name()) +
                             "' must be f32");
    }
    if ((*w)->dtype() != plan::DType::F32)
      return Status::error(kname + ": parameter '" + str((*w)->name()) + "' must be f32");
    auto step = variable(a->step(), "step");
    if (!step)
      return step.status();
    if (elementCount(toShape((*step)->shape())) != 1)
      return Status::error(kname + ": step variable '" + str((*step)->name()) +
                           "' must be a scalar");
    if ((*step)->dtype() != plan::DType::F32)
      return Status::error(kname + ": step variable '" + str((*step)->name()) + "' must be f32");
    if (!(a->beta1() >= 0.0f && a->beta1() < 1.0f) || !(a->beta2() >= 0.0f && a->beta2() < 1.0f))
      return Status::error(kname + ": AdamWAttrs betas must lie in [0, 1)");
    if (!(a->eps() > 0.0f))
      return Status::error(kname + ": AdamWAttrs.eps must be positive");
    return optimizerInputs(*w);
  }
  default:
    return Status::ok();
  }
}

Status checkProgram(const plan::Plan &p, const plan::Program &prog) {
  const std::string pname = "program '" + str(prog.name()) + "'";
  const auto *tensors = prog.tensors();
  const auto *tasks = prog.tasks();
  const auto *regs = prog.registers();
  const int nt = static_cast<int>(len(tensors));
  const int nk = static_cast<int>(len(tasks));
  const int nv = static_cast<int>(len(p.variables()));
  if (prog.arena_bytes() < 0)
    return Status::error(pname + ": negative arena_bytes " + std::to_string(prog.arena_bytes()));

  for (int i = 0; i < nt; ++i) {
    const plan::Tensor *t = tensors->Get(i);
    std::string tname = pname + ": tensor " + std::to_string(i) + " '" + str(t->name()) + "'";
    if (t->dtype() > plan::DType::MAX)
      return Status::error(tname + ": unknown dtype " +
                           std::to_string(static_cast<int>(t->dtype())));
    if (Status s = checkTyped(p, tname, t->placement(), t->shape(), t->sbp()); !s)
      return s;
    if (t->variable() < -1 || t->variable() >= nv)
      return Status::error(tname + ": variable " + std::to_string(t->variable()) +
                           " out of range (plan has " + std::to_string(nv) + " variables)");
    Shape shape = toShape(t->shape());
    if (t->variable() >= 0) {
      const plan::Variable *v = p.variables()->Get(t->variable());
      if (toShape(v->shape()) != shape || v->placement() != t->placement() ||
          toNdSbp(v->sbp()) != toNdSbp(t->sbp()))
        return Status::error(tname + ": view of variable '" + str(v->name()) +
                             "' but shape/placement/SBP differ");
      if (v->dtype() == plan::DType::I32 && t->dtype() != plan::DType::I32)
        return Status::error(tname + ": " + plan::EnumNameDType(t->dtype()) +
                             " view of i32 variable '" + str(v->name()) + "'");
      continue;
    }
    int64_t need = maxLocalElements(shape, toNdSbp(t->sbp()),
                                    toHierarchy(*p.placements()->Get(t->placement()))) *
                   static_cast<int64_t>(dtypeSize(t->dtype()));
    if (t->bytes() < need)
      return Status::error(tname + ": bytes " + std::to_string(t->bytes()) +
                           " smaller than its largest local shard (" + std::to_string(need) + ")");
    if (t->offset() < 0)
      return Status::error(tname + ": activation without an arena offset");
    if (t->bytes() > prog.arena_bytes() - t->offset())
      return Status::error(tname + ": offset " + std::to_string(t->offset()) + " + bytes " +
                           std::to_string(t->bytes()) + " exceeds arena_bytes " +
                           std::to_string(prog.arena_bytes()));
  }

  std::vector<int> producer(nt, -1);
  std::vector<int> seqs;
  for (int k = 0; k < nk; ++k) {
    const plan::Task *task = tasks->Get(k);
    std::string kname = pname + ": task " + std::to_string(k) + " '" + str(task->name()) + "'";
    const char *op = opName(task->op());
    if (!*op)
      return Status::error(kname + ": unknown op kind " +
                           std::to_string(static_cast<int>(task->op())));
    kname += " (" + std::string(op) + ")";
    const Arity counts = arity(task->op());
    int gotIn = static_cast<int>(len(task->inputs())),
        gotOut = static_cast<int>(len(task->outputs()));
    auto expected = [](int lo, int hi) {
      if (lo == hi)
        return std::to_string(lo);
      return hi < 0 ? "at least " + std::to_string(lo)
                    : std::to_string(lo) + " to " + std::to_string(hi);
    };
    if (gotIn < counts.minIn || (counts.maxIn >= 0 && gotIn > counts.maxIn))
      return Status::error(kname + ": expects " + expected(counts.minIn, counts.maxIn) +
                           " inputs, has " + std::to_string(gotIn));
    if (gotOut < counts.minOut || (counts.maxOut >= 0 && gotOut > counts.maxOut))
      return Status::error(kname + ": expects " + expected(counts.minOut, counts.maxOut) +
                           " outputs, has " + std::to_string(gotOut));
    if (task->op() == plan::OpKind::AllReduce && gotIn != gotOut)
      return Status::error(kname + ": AllReduce needs as many outputs as inputs");
    for (int j = 0; j < gotIn; ++j) {
      int t = task->inputs()->Get(j);
      if (t < 0 || t >= nt)
        return Status::error(kname + ": input " + std::to_string(j) + " is tensor " +
                             std::to_string(t) + ", out of range (" + std::to_string(nt) +
                             " tensors)");
      if (producer[t] < 0)
        return Status::error(kname + ": input tensor '" + str(tensors->Get(t)->name()) +
                             "' is not produced by an earlier task");
      bool found = false;
      for (size_t r = 0; r < len(regs) && !found; ++r) {
        const plan::Register *reg = regs->Get(r);
        if (reg->tensor() != t || reg->producer() != producer[t])
          continue;
        for (size_t c = 0; c < len(reg->consumers()); ++c)
          found = found || reg->consumers()->Get(c) == k;
      }
      if (!found)
        return Status::error(kname + ": no register carries input tensor '" +
                             str(tensors->Get(t)->name()) + "' to this task");
    }
    for (int j = 0; j < gotOut; ++j) {
      int t = task->outputs()->Get(j);
      if (t < 0 || t >= nt)
        return Status::error(kname + ": output " + std::to_string(j) + " is tensor " +
                             std::to_string(t) + ", out of range (" + std::to_string(nt) +
                             " tensors)");
      if (producer[t] >= 0)
        return Status::error(kname + ": tensor '" + str(tensors->Get(t)->name()) +
                             "' already produced by task '" + str(tasks->Get(producer[t])->name()) +
                             "'");
      producer[t] = k;
    }
    if (task->op() == plan::OpKind::Parameter &&
        tensors->Get(task->outputs()->Get(0))->variable() < 0)
      return Status::error(kname + ": output is not a view of a variable");

    plan::OpAttrs want;
    bool required = needsAttrs(task->op(), want);
    if (task->attrs_type() == plan::OpAttrs::NONE && required)
      return Status::error(kname + ": missing attrs (" + plan::EnumNameOpAttrs(want) +
                           " expected)");
    if (task->attrs_type() != plan::OpAttrs::NONE && task->attrs_type() != want)
      return Status::error(kname + ": attrs are " +
                           std::string(plan::EnumNameOpAttrs(task->attrs_type())) + ", expected " +
                           plan::EnumNameOpAttrs(want));
    std::vector<const plan::Tensor *> inT, outT;
    for (int j = 0; j < gotIn; ++j)
      inT.push_back(tensors->Get(task->inputs()->Get(j)));
    for (int j = 0; j < gotOut; ++j)
      outT.push_back(tensors->Get(task->outputs()->Get(j)));
    if (Status s = checkOpDtypes(task->op(), inT, outT, kname); !s)
      return s;
    if (Status s = checkOpSemantics(p, *task, inT, outT, kname); !s)
      return s;
    if (const plan::CollectiveAttrs *c = task->attrs_as_CollectiveAttrs()) {
      const plan::Tensor *in = tensors->Get(task->inputs()->Get(0));
      int dims = static_cast<int>(len(p.placements()->Get(in->placement())->hierarchy()));
      if (c->hierarchy_dim() < 0 || c->hierarchy_dim() >= dims)
        return Status::error(kname + ": hierarchy_dim " + std::to_string(c->hierarchy_dim()) +
                             " out of range (placement has " + std::to_string(dims) +
                             " dimensions)");
    }
    if (const plan::MeanAttrs *m = task->attrs_as_MeanAttrs(); m && m->count() <= 0)
      return Status::error(kname + ": MeanAttrs.count must be positive, is " +
                           std::to_string(m->count()));
    if (isCollective(task->op())) {
      if (task->collective_seq() < 0)
        return Status::error(kname + ": collective without a collective_seq");
      seqs.push_back(task->collective_seq());
    } else if (task->collective_seq() != -1) {
      return Status::error(kname + ": collective_seq " + std::to_string(task->collective_seq()) +
                           " on a task that is not a collective");
    }
  }
  std::vector<bool> seen(seqs.size(), false);
  for (int s : seqs) {
    if (s >= static_cast<int>(seqs.size()) || seen[s])
      return Status::error(pname + ": collective_seq values are not a permutation of 0.." +
                           std::to_string(static_cast<int>(seqs.size()) - 1) + " (bad value " +
                           std::to_string(s) + ")");
    seen[s] = true;
  }

  for (int r = 0; r < static_cast<int>(len(regs)); ++r) {
    const plan::Register *reg = regs->Get(r);
    std::string rname = pname + ": register " + std::to_string(r);
    if (reg->producer() < 0 || reg->producer() >= nk)
      return Status::error(rname + ": producer task " + std::to_string(reg->producer()) +
                           " out of range (" + std::to_string(nk) + " tasks)");
    rname += " (from task '" + str(tasks->Get(reg->producer())->name()) + "')";
    if (reg->tensor() < -1 || reg->tensor() >= nt)
      return Status::error(rname + ": tensor " + std::to_string(reg->tensor()) + " out of range");
    if (reg->tensor() >= 0 && producer[reg->tensor()] != reg->producer())
      return Status::error(rname + ": tensor '" + str(tensors->Get(reg->tensor())->name()) +
                           "' is not an output of its producer");
    if (len(reg->consumers()) == 0)
      return Status::error(rname + ": no consumers");
    for (size_t c = 0; c < len(reg->consumers()); ++c) {
      int k = reg->consumers()->Get(c);
      if (k < 0 || k >= nk)
        return Status::error(rname + ": consumer task " + std::to_string(k) + " out of range");
      if (k <= reg->producer())
        return Status::error(rname + ": consumer '" + str(tasks->Get(k)->name()) +
                             "' does not come after its producer (tasks must be in "
                             "topological order)");
    }
    if (reg->count() < 1)
      return Status::error(rname + ": count " + std::to_string(reg->count()) +
                           " (at least 1 slot needed)");
  }

  for (size_t i = 0; i < len(prog.inputs()); ++i) {
    const plan::Binding *b = prog.inputs()->Get(i);
    if (b->tensor() < 0 || b->tensor() >= nt)
      return Status::error(pname + ": input binding '" + str(b->name()) + "' points at tensor " +
                           std::to_string(b->tensor()) + ", out of range");
  }
  std::set<std::string> outputNames;
  for (size_t i = 0; i < len(prog.outputs()); ++i) {
    const plan::Binding *b = prog.outputs()->Get(i);
    if (b->tensor() < 0 || b->tensor() >= nt)
      return Status::error(pname + ": output binding '" + str(b->name()) + "' points at tensor " +
                           std::to_string(b->tensor()) + ", out of range");
    if (!outputNames.insert(str(b->name())).second)
      return Status::error(pname + ": output '" + str(b->name()) + "' bound twice");
  }
  for (size_t i = 0; i < len(prog.metrics()); ++i) {
    const plan::Metric *m = prog.metrics()->Get(i);
    if (m->tensor() < 0 || m->tensor() >= nt)
      return Status::error(pname + ": metric '" + str(m->name()) + "' points at tensor " +
                           std::to_string(m->tensor()) + ", out of range");
    if (tensors->Get(m->tensor())->dtype() != plan::DType::F32)
      return Status::error(pname + ": metric '" + str(m->name()) + "' is not an f32 tensor");
  }
  return Status::ok();
}

} // namespace

Shape toShape(const flatbuffers::Vector<int64_t> *shape) {
  Shape s;
  for (size_t i = 0; i < len(shape); ++i)
    s.push_back(shape->Get(i));
  return s;
}

NdSbp toNdSbp(const flatbuffers::Vector<const plan::SbpDim *> *sbp) {
  NdSbp out;
  for (size_t i = 0; i < len(sbp); ++i) {
    SbpDim d;
    d.kind = static_cast<SbpKind>(static_cast<int8_t>(sbp->Get(i)->kind()));
    d.axis = sbp->Get(i)->axis();
    out.push_back(d);
  }
  return out;
}

std::vector<int64_t> toHierarchy(const plan::Placement &placement) {
  std::vector<int64_t> h;
  for (size_t i = 0; i < len(placement.hierarchy()); ++i)
    h.push_back(placement.hierarchy()->Get(i));
  return h;
}

int rankIndexIn(const plan::Placement &placement, int globalRank) {
  for (size_t i = 0; i < len(placement.ranks()); ++i)
    if (placement.ranks()->Get(i) == globalRank)
      return static_cast<int>(i);
  return -1;
}

const char *opName(plan::OpKind op) {
  if (op > plan::OpKind::MAX)
    return "";
  const char *n = plan::EnumNameOpKind(op);
  return n ? n : "";
}

bool isCollective(plan::OpKind op) {
  return op == plan::OpKind::AllReduce || op == plan::OpKind::AllGather ||
         op == plan::OpKind::ReduceScatter || op == plan::OpKind::AllToAll;
}

size_t dtypeSize(plan::DType dtype) { return dtype == plan::DType::BF16 ? 2 : 4; }

Status checkPlan(const plan::Plan &p) {
  if (p.version() != kPlanVersion)
    return Status::error("plan version " + std::to_string(p.version()) +
                         " is not supported (this runtime reads version " +
                         std::to_string(kPlanVersion) + ")");
  for (size_t i = 0; i < len(p.placements()); ++i) {
    const plan::Placement *pl = p.placements()->Get(i);
    std::string what = "placement " + std::to_string(i) + " '" + str(pl->name()) + "'";
    if (len(pl->hierarchy()) == 0)
      return Status::error(what + ": empty hierarchy");
    int64_t product = 1;
    for (size_t d = 0; d < len(pl->hierarchy()); ++d) {
      if (pl->hierarchy()->Get(d) < 1)
        return Status::error(what + ": hierarchy dimension " + std::to_string(d) + " is " +
                             std::to_string(pl->hierarchy()->Get(d)));
      if (__builtin_mul_overflow(product, static_cast<int64_t>(pl->hierarchy()->Get(d)), &product))
        return Status::error(what + ": hierarchy product overflows");
    }
    if (product != static_cast<int64_t>(len(pl->ranks())))
      return Status::error(what + ": hierarchy product " + std::to_string(product) +
                           " differs from its " + std::to_string(len(pl->ranks())) + " ranks");
    std::set<int> ranks;
    for (size_t r = 0; r < len(pl->ranks()); ++r)
      if (pl->ranks()->Get(r) < 0 || !ranks.insert(pl->ranks()->Get(r)).second)
        return Status::error(what + ": rank " + std::to_string(pl->ranks()->Get(r)) +
                             " negative or repeated");
  }
  for (size_t i = 0; i < len(p.variables()); ++i) {
    const plan::Variable *v = p.variables()->Get(i);
    std::string what = "variable " + std::to_string(i) + " '" + str(v->name()) + "'";
    if (Status s = checkTyped(p, what, v->placement(), v->shape(), v->sbp()); !s)
      return s;
    if (v->dtype() != plan::DType::F32 && v->dtype() != plan::DType::I32)
      return Status::error(what + ": variables must be f32 or i32, not " +
                           plan::EnumNameDType(v->dtype()));
    if (v->init()->kind() > plan::InitKind::MAX)
      return Status::error(what + ": unknown init kind");
    if (v->dtype() == plan::DType::I32 && v->init()->kind() != plan::InitKind::Zeros &&
        (v->init()->kind() != plan::InitKind::Constant ||
         v->init()->a() != static_cast<float>(static_cast<int32_t>(v->init()->a()))))
      return Status::error(what + ": an i32 variable starts from Zeros or an integral Constant");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < len(p.programs()); ++i) {
    const plan::Program *prog = p.programs()->Get(i);
    if (!names.insert(str(prog->name())).second)
      return Status::error("program '" + str(prog->name()) + "' defined twice");
    if (Status s = checkProgram(p, *prog); !s)
      return s;
  }
  return Status::ok();
}

StatusOr<LoadedPlan> loadPlanBuffer(std::vector<uint8_t> bytes) {
  if (bytes.size() < 8)
    return Status::error("plan buffer too short (" + std::to_string(bytes.size()) +
                         " bytes): not a plan file");
  if (!plan::PlanBufferHasIdentifier(bytes.data()))
    return Status::error(std::string("not a plan: file identifier is not '") +
                         plan::PlanIdentifier() + "'");
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!plan::VerifyPlanBuffer(verifier))
    return Status::error("plan buffer failed flatbuffers verification (truncated or corrupt, " +
                         std::to_string(bytes.size()) + " bytes)");
  LoadedPlan loaded(std::move(bytes));
  if (Status s = checkPlan(*loaded.plan()); !s)
    return s.withContext("invalid plan");
  return loaded;
}

StatusOr<LoadedPlan> loadPlanFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error("cannot open plan file '" + path + "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad())
    return Status::error("cannot read plan file '" + path + "'");
  StatusOr<LoadedPlan> loaded = loadPlanBuffer(std::move(bytes));
  if (!loaded)
    return loaded.status().withContext("plan file '" + path + "'");
  return loaded;
}

namespace {
// The attributes that change what a task does, in the task's line.
void describeAttrs(const plan::Task &task, std::ostream &os) {
  if (auto *m = task.attrs_as_MatMulAttrs()) {
    if (m->transpose_a())
      os << " transpose_a";
    if (m->transpose_b())
      os << " transpose_b";
  } else if (auto *f = task.attrs_as_FillAttrs()) {
    os << " value " << f->value();
  } else if (auto *m = task.attrs_as_MeanAttrs()) {
    os << " count " << m->count();
  } else if (auto *in = task.attrs_as_InputAttrs()) {
    os << " field " << str(in->field());
  } else if (auto *sgd = task.attrs_as_SgdAttrs()) {
    os << " lr " << sgd->lr() << " momentum " << sgd->momentum() << " weight_decay "
       << sgd->weight_decay() << " variable #" << sgd->param();
    if (sgd->momentum_buffer() >= 0)
      os << " buffer #" << sgd->momentum_buffer();
  } else if (auto *c = task.attrs_as_CollectiveAttrs()) {
    os << " dim " << c->hierarchy_dim() << " reduce " << plan::EnumNameReduceOp(c->reduce());
  } else if (auto *a = task.attrs_as_AdamWAttrs()) {
    os << " lr " << a->lr() << " beta1 " << a->beta1() << " beta2 " << a->beta2() << " eps "
       << a->eps() << " weight_decay " << a->weight_decay() << " variable #" << a->param() << " m #"
       << a->m() << " v #" << a->v() << " step #" << a->step();
  } else if (auto *n = task.attrs_as_NormAttrs()) {
    os << " eps " << n->eps();
  } else if (auto *at = task.attrs_as_AttentionAttrs()) {
    os << " heads " << at->heads();
  } else if (auto *d = task.attrs_as_DropoutAttrs()) {
    os << " p " << d->p() << " seed " << d->seed();
  } else if (auto *t = task.attrs_as_TransposeAttrs()) {
    os << " perm [";
    for (size_t k = 0; k < len(t->perm()); ++k)
      os << (k ? "," : "") << t->perm()->Get(k);
    os << "]";
  } else if (auto *n = task.attrs_as_NarrowAttrs()) {
    os << " axis " << n->axis() << " begin " << n->begin();
  } else if (auto *c = task.attrs_as_ConcatAttrs()) {
    os << " axis " << c->axis();
  } else if (auto *c = task.attrs_as_ClipAttrs()) {
    os << " max_norm " << c->max_norm();
  }
}
} // namespace

std::string describePlan(const plan::Plan &p) {
  std::ostringstream os;
  os << "plan version " << p.version();
  if (p.source())
    os << " of '" << p.source()->str() << "'";
  os << "\nplacements:\n";
  for (size_t i = 0; i < len(p.placements()); ++i) {
    const plan::Placement *pl = p.placements()->Get(i);
    os << "  #" << i << " " << str(pl->name()) << " " << plan::EnumNameDeviceKind(pl->device())
       << " hierarchy " << toString(toHierarchy(*pl)) << " ranks [";
    for (size_t r = 0; r < len(pl->ranks()); ++r)
      os << (r ? "," : "") << pl->ranks()->Get(r);
    os << "]\n";
  }
  os << "variables:\n";
  for (size_t i = 0; i < len(p.variables()); ++i) {
    const plan::Variable *v = p.variables()->Get(i);
    os << "  #" << i << " " << str(v->name()) << " " << plan::EnumNameDType(v->dtype())
       << toString(toShape(v->shape())) << " placement " << v->placement() << " "
       << toString(toNdSbp(v->sbp())) << " init " << plan::EnumNameInitKind(v->init()->kind())
       << "(" << v->init()->a() << ", " << v->init()->b() << ", seed " << v->init()->seed()
       << ")\n";
  }
  for (size_t pi = 0; pi < len(p.programs()); ++pi) {
    const plan::Program *prog = p.programs()->Get(pi);
    os << "program " << str(prog->name()) << " (arena " << prog->arena_bytes() << " bytes)\n";
    os << "  tensors:\n";
    for (size_t i = 0; i < len(prog->tensors()); ++i) {
      const plan::Tensor *t = prog->tensors()->Get(i);
      os << "    %" << i << " " << str(t->name()) << " " << plan::EnumNameDType(t->dtype())
         << toString(toShape(t->shape())) << " placement " << t->placement() << " "
         << toString(toNdSbp(t->sbp()));
      if (t->variable() >= 0)
        os << " = variable #" << t->variable();
      else
        os << " @" << t->offset() << " (" << t->bytes() << " bytes)";
      os << "\n";
    }
    os << "  tasks:\n";
    for (size_t k = 0; k < len(prog->tasks()); ++k) {
      const plan::Task *task = prog->tasks()->Get(k);
      os << "    " << k << " " << str(task->name()) << " " << opName(task->op()) << " (";
      for (size_t j = 0; j < len(task->inputs()); ++j)
        os << (j ? ", " : "") << "%" << task->inputs()->Get(j);
      os << ") -> (";
      for (size_t j = 0; j < len(task->outputs()); ++j)
        os << (j ? ", " : "") << "%" << task->outputs()->Get(j);
      os << ") queue " << plan::EnumNameQueue(task->queue());
      if (task->collective_seq() >= 0)
        os << " collective #" << task->collective_seq();
      describeAttrs(*task, os);
      os << "\n";
    }
    os << "  registers:\n";
    for (size_t r = 0; r < len(prog->registers()); ++r) {
      const plan::Register *reg = prog->registers()->Get(r);
      os << "    " << r << " task " << reg->producer() << " -> [";
      for (size_t c = 0; c < len(reg->consumers()); ++c)
        os << (c ? "," : "") << reg->consumers()->Get(c);
      os << "] ";
      if (reg->tensor() >= 0)
        os << "%" << reg->tensor();
      else
        os << "control";
      os << " x" << reg->count() << "\n";
    }
    for (size_t i = 0; i < len(prog->inputs()); ++i)
      os << "  input " << str(prog->inputs()->Get(i)->name()) << " -> %"
         << prog->inputs()->Get(i)->tensor() << "\n";
    for (size_t i = 0; i < len(prog->outputs()); ++i)
      os << "  output " << str(prog->outputs()->Get(i)->name()) << " <- %"
         << prog->outputs()->Get(i)->tensor() << "\n";
    for (size_t i = 0; i < len(prog->metrics()); ++i)
      os << "  metric " << str(prog->metrics()->Get(i)->name()) << " <- %"
         << prog->metrics()->Get(i)->tensor() << " ("
         << plan::EnumNameMetricReduce(prog->metrics()->Get(i)->reduce()) << ")\n";
  }
  return os.str();
}

} // namespace sbpflow

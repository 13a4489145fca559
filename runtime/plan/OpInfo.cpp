// The table of runtime/plan/OpInfo.h, expanded from Ops.def.
#include "runtime/plan/OpInfo.h"

#include <array>

namespace sbpflow {
namespace {

constexpr OpInfo kOps[] = {
#define SBP_PLAN_OP(Name, Value, Category, MinIn, MaxIn, MinOut, MaxOut, InTypes, OutTypes, Attrs, \
                    AttrsRequired, Doc)                                                            \
  {plan::OpKind::Name,                                                                             \
   #Name,                                                                                          \
   OpCategory::Category,                                                                           \
   MinIn,                                                                                          \
   MaxIn,                                                                                          \
   MinOut,                                                                                         \
   MaxOut,                                                                                         \
   InTypes,                                                                                        \
   OutTypes,                                                                                       \
   plan::OpAttrs::Attrs,                                                                           \
   AttrsRequired,                                                                                  \
   Doc},
#include "runtime/plan/Ops.def"
#undef SBP_PLAN_OP
};

constexpr size_t kMaxKind = static_cast<size_t>(plan::OpKind::MAX);

// kind -> row index, -1 where Ops.def has no row.
constexpr std::array<int, kMaxKind + 1> indexByKind() {
  std::array<int, kMaxKind + 1> index{};
  for (int &i : index)
    i = -1;
  for (size_t r = 0; r < sizeof(kOps) / sizeof(kOps[0]); ++r)
    index[static_cast<size_t>(kOps[r].kind)] = static_cast<int>(r);
  return index;
}
constexpr std::array<int, kMaxKind + 1> kIndex = indexByKind();

} // namespace

const OpInfo *opInfo(plan::OpKind kind) {
  const size_t k = static_cast<size_t>(kind);
  if (k > kMaxKind || kIndex[k] < 0)
    return nullptr;
  return &kOps[kIndex[k]];
}

const OpInfo *opInfos(size_t &count) {
  count = sizeof(kOps) / sizeof(kOps[0]);
  return kOps;
}

} // namespace sbpflow

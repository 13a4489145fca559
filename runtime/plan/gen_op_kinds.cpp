// Prints the plan schema's `enum OpKind` (runtime/plan/op_kind.fbs in the
// build tree, included by plan.fbs) from Ops.def, so that the list of plan
// ops is written once.
#include <cstdio>
#include <cstring>

int main() {
  std::puts("// Generated from runtime/plan/Ops.def by gen_op_kinds.cpp: edit Ops.def.\n"
            "namespace sbpflow.plan;\n\n"
            "enum OpKind : ushort {");
#define SBP_PLAN_OP(Name, Value, Category, MinIn, MaxIn, MinOut, MaxOut, InTypes, OutTypes, Attrs, \
                    AttrsRequired, Doc)                                                            \
  std::printf("  %s = %d, // %s: %s\n", #Name, Value, #Category, Doc);
#include "runtime/plan/Ops.def"
#undef SBP_PLAN_OP
  std::puts("}");
  return 0;
}

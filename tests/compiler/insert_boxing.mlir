// sbp-insert-boxing: an operand whose SBP differs from the chosen one gets a
// chain of boxing ops, one hierarchy dimension at a time, in the order the
// cost model finds cheapest.
// RUN: sbpflow-opt %s --split-input-file --sbp-insert-boxing | FileCheck %s
// RUN: sbpflow-opt %s --split-input-file --sbp-insert-boxing --debug-only=sbp-insert-boxing 2>&1 >/dev/null | FileCheck %s --check-prefix=DEBUG
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing | FileCheck %s --check-prefix=DP
// RUN: sbpflow-opt %s --split-input-file --sbp-propagate --sbp-insert-boxing | FileCheck %s --check-prefix=PROP

// Data-parallel MLP: no boxing in forward, exactly one all-reduce (P -> B)
// per parameter gradient in backward.
// DP-LABEL: func.func @train
// DP-NOT: sbp.all_reduce
// DP: sbp.fill
// DP-COUNT-4: sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<{{.*}}, #sbp.t<@dp, [P(sum)]>>) -> tensor<{{.*}}, #sbp.t<@dp, [B]>>
// DP-NOT: sbp.all_reduce
// DP-NOT: sbp.all_gather
// DP-NOT: sbp.operand_sbp
// DP: return

// A matmul with an S(1)-annotated weight and an S(0) input: the weight is
// all-gathered to B, then S(0) x B -> S(0).
// PROP-LABEL: func.func @column_weight
// PROP: %[[W:.*]] = sbp.input "w"
// PROP: %[[WB:.*]] = sbp.all_gather %[[W]] {dim = 0 : i64} : (tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>) -> tensor<32x16xf32, #sbp.t<@dp, [B]>>
// PROP: sbp.matmul %{{.*}}, %[[WB]] : (tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32x16xf32, #sbp.t<@dp, [B]>>) -> tensor<64x16xf32, #sbp.t<@dp, [S(0)]>>

// CHECK-LABEL: func.func @column_weight
// CHECK: sbp.all_gather
// DEBUG: [sbp-insert-boxing] all-gather: operand #1 of sbp.matmul S(1) -> B on dim 0
module {
  sbp.placement @dp cpu ranks [0, 1, 2, 3] hierarchy [4]
  func.func @column_weight() {
    %x = sbp.input "x" : tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.input "w" : tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>
    %y = sbp.matmul %x, %w {sbp.operand_sbp = [#sbp.t<@dp, [S(0)]>, #sbp.t<@dp, [B]>]} : (tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>) -> tensor<64x16xf32, #sbp.t<@dp, [S(0)]>>
    return
  }
}

// -----

// Every 1-D change of DESIGN.md's table; one boxed value is shared by all
// consumers that need the same SBP.
// CHECK-LABEL: func.func @table
// CHECK: %[[P:.*]] = sbp.mean %{{.*}}
// CHECK: %[[PB:.*]] = sbp.all_reduce %[[P]] {dim = 0 : i64} : (tensor<f32, #sbp.t<@dp, [P(sum)]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
// CHECK: sbp.add %[[PB]], %[[PB]]
// CHECK: %[[RS:.*]] = sbp.reduce_scatter %{{.*}} {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(1)]>>
// CHECK: %[[A2A:.*]] = sbp.all_to_all %{{.*}} {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(1)]>>
// CHECK: sbp.add %[[RS]], %[[A2A]]
// CHECK: %[[SL:.*]] = sbp.slice %{{.*}} {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
// CHECK: %[[Z:.*]] = sbp.zero_others %{{.*}} {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
// CHECK: %[[G:.*]] = sbp.all_gather %{{.*}} {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [B]>>
// CHECK: %[[GZ:.*]] = sbp.zero_others %[[G]] {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
// CHECK: sbp.add %[[Z]], %[[GZ]]
// DEBUG: all-reduce: operand #0 of sbp.add P(sum) -> B on dim 0
// DEBUG: reduce-scatter: operand #0 of sbp.add P(sum) -> S(1) on dim 0
// DEBUG: all-to-all: operand #1 of sbp.add S(0) -> S(1) on dim 0
// DEBUG: slice: operand #1 of sbp.relu_grad B -> S(0) on dim 0
// DEBUG: zero-others: operand #0 of sbp.add B -> P(sum) on dim 0
// DEBUG: all-gather+zero-others: operand #1 of sbp.add S(0) -> P(sum) on dim 0
module {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  func.func @table() {
    %s = sbp.input "s" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %b = sbp.input "b" : tensor<8x4xf32, #sbp.t<@dp, [B]>>
    %p = sbp.mean %s : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<f32, #sbp.t<@dp, [P(sum)]>>
    %pb = sbp.add %p, %p {sbp.operand_sbp = [#sbp.t<@dp, [B]>, #sbp.t<@dp, [B]>]} : (tensor<f32, #sbp.t<@dp, [P(sum)]>>, tensor<f32, #sbp.t<@dp, [P(sum)]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    %pm = sbp.add %s, %s {sbp.operand_sbp = [#sbp.t<@dp, [B]>, #sbp.t<@dp, [B]>]} : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [B]>>
    %pp = sbp.zero_others %pm {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
    %rs = sbp.add %pp, %s {sbp.operand_sbp = [#sbp.t<@dp, [S(1)]>, #sbp.t<@dp, [S(1)]>]} : (tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>, tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(1)]>>
    %sl = sbp.relu_grad %s, %b {sbp.operand_sbp = [#sbp.t<@dp, [S(0)]>, #sbp.t<@dp, [S(0)]>]} : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %zo = sbp.add %b, %s {sbp.operand_sbp = [#sbp.t<@dp, [P(sum)]>, #sbp.t<@dp, [P(sum)]>]} : (tensor<8x4xf32, #sbp.t<@dp, [B]>>, tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
    return
  }
}

// -----

// 2-D: [S(0), P(sum)] -> [B, B] is two steps; the all-reduce on dim 1 goes
// first and the all-gather on dim 0 (which grows the tensor) last.
// CHECK-LABEL: func.func @two_d
// CHECK: %[[R:.*]] = sbp.all_reduce %{{.*}} {dim = 1 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK: %[[G:.*]] = sbp.all_gather %[[R]] {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [B, B]>>
// CHECK: sbp.relu %[[G]]
// DEBUG: [sbp-insert-boxing] order: dim 1, dim 0 for operand #0 of sbp.relu [S(0), P(sum)] -> [B, B] (cost
// DEBUG: all-reduce: operand #0 of sbp.relu P(sum) -> B on dim 1
// DEBUG: all-gather: operand #0 of sbp.relu S(0) -> B on dim 0
module {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  func.func @two_d() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>
    %p = sbp.zero_others %x {dim = 1 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
    %r = sbp.relu %p {sbp.operand_sbp = [#sbp.t<@mesh, [B, B]>]} : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [B, B]>>
    return
  }
}

// -----

// The order of the per-dimension steps comes from the cost model: slicing
// dim 1 first (free) halves what the reduce-scatter on dim 0 moves. A fixed
// "splits first, in dimension order" rule would reduce-scatter the whole
// tensor first.
// CHECK-LABEL: func.func @order_by_cost
// CHECK: %[[P:.*]] = sbp.zero_others
// CHECK: %[[S:.*]] = sbp.slice %[[P]] {dim = 1 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [P(sum), B]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [P(sum), S(0)]>>
// CHECK: %[[R:.*]] = sbp.reduce_scatter %[[S]] {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [P(sum), S(0)]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [S(1), S(0)]>>
// CHECK: sbp.relu %[[R]]
// DEBUG: [sbp-insert-boxing] order: dim 1, dim 0 for operand #0 of sbp.relu [P(sum), B] -> [S(1), S(0)] (cost
// DEBUG: slice: operand #0 of sbp.relu B -> S(0) on dim 1
// DEBUG: reduce-scatter: operand #0 of sbp.relu P(sum) -> S(1) on dim 0
module {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  func.func @order_by_cost() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@mesh, [B, B]>>
    %p = sbp.zero_others %x {dim = 0 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [B, B]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [P(sum), B]>>
    %r = sbp.relu %p {sbp.operand_sbp = [#sbp.t<@mesh, [S(1), S(0)]>]} : (tensor<8x4xf32, #sbp.t<@mesh, [P(sum), B]>>) -> tensor<8x4xf32, #sbp.t<@mesh, [S(1), S(0)]>>
    return
  }
}

// -----

// An axis split on both dimensions cannot change on the outer one while the
// inner one splits it (its chunks would move between the inner groups), and
// no order of straight steps avoids that here: the detour gathers the inner
// split, changes the outer dimension and splits the inner one again.
// CHECK-LABEL: func.func @detour_through_inner_gather
// CHECK: %[[X:.*]] = sbp.input "x"
// CHECK: %[[G1:.*]] = sbp.all_gather %[[X]] {dim = 1 : i64} : (tensor<8xf32, #sbp.t<@mesh, [S(0), S(0)]>>) -> tensor<8xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK: %[[G0:.*]] = sbp.all_gather %[[G1]] {dim = 0 : i64} : (tensor<8xf32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8xf32, #sbp.t<@mesh, [B, B]>>
// CHECK: %[[S:.*]] = sbp.slice %[[G0]] {dim = 1 : i64} : (tensor<8xf32, #sbp.t<@mesh, [B, B]>>) -> tensor<8xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.relu %[[S]]
// DEBUG: [sbp-insert-boxing] order: dim 1 to B, dim 0, dim 1 for operand #0 of sbp.relu [S(0), S(0)] -> [B, S(0)] (cost
// DEBUG: all-gather: operand #0 of sbp.relu S(0) -> B on dim 1
// DEBUG: all-gather: operand #0 of sbp.relu S(0) -> B on dim 0
// DEBUG: slice: operand #0 of sbp.relu B -> S(0) on dim 1
module {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  func.func @detour_through_inner_gather() {
    %x = sbp.input "x" : tensor<8xf32, #sbp.t<@mesh, [S(0), S(0)]>>
    %r = sbp.relu %x {sbp.operand_sbp = [#sbp.t<@mesh, [B, S(0)]>]} : (tensor<8xf32, #sbp.t<@mesh, [S(0), S(0)]>>) -> tensor<8xf32, #sbp.t<@mesh, [B, S(0)]>>
    return
  }
}

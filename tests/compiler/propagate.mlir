// sbp-propagate: every unannotated tensor gets the SBP of the cheapest
// signature; user-given SBPs win; chosen operand SBPs land in sbp.operand_sbp.
// RUN: sbpflow-opt %s --split-input-file --sbp-propagate | FileCheck %s
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate | FileCheck %s --check-prefix=DP
// RUN: sbpflow-opt %S/inputs/linear_one_rank.mlir --sbp-compile | FileCheck %s --check-prefix=ONE

// One rank: the S(0) annotations become B, nothing is partial, and the whole
// compiled step holds no boxing op.
// ONE: sbp.input "x" {{.*}}: tensor<8x4xf32, #sbp.t<@one, [B]>>
// ONE: sbp.mean {{.*}} -> tensor<f32, #sbp.t<@one, [B]>>
// ONE-NOT: sbp.all_reduce
// ONE-NOT: sbp.all_gather
// ONE-NOT: sbp.all_to_all
// ONE-NOT: sbp.reduce_scatter
// ONE-NOT: sbp.slice
// ONE-NOT: sbp.zero_others
// ONE: sbp.sgd

// Data parallel: the forward stays S(0) with B weights, the loss is P(sum),
// weight and bias gradients come out P(sum) and sgd asks for B.
// DP: %[[H:.*]] = sbp.matmul {{.*}} -> tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>
// DP: sbp.relu {{.*}} -> tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>
// DP: sbp.mean {{.*}} -> tensor<f32, #sbp.t<@dp, [P(sum)]>>
// DP: sbp.fill 1.000000e+00 : tensor<f32, #sbp.t<@dp, [B]>>
// DP: sbp.mean_grad {{.*}} -> tensor<256xf32, #sbp.t<@dp, [S(0)]>>
// DP: sbp.reduce_rows {{.*}} -> tensor<10xf32, #sbp.t<@dp, [P(sum)]>>
// DP: sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<64x10xf32, #sbp.t<@dp, [P(sum)]>>
// DP: sbp.sgd {{.*}}sbp.operand_sbp = [#sbp.t<@dp, [B]>]{{.*}} : tensor<10xf32, #sbp.t<@dp, [P(sum)]>>

// A weight split on its columns and a row-split input: gathering the small
// weight is cheaper than gathering the input.
// CHECK-LABEL: func.func @column_weight
// CHECK: sbp.matmul %{{.*}}, %{{.*}} {sbp.operand_sbp = [#sbp.t<@dp, [S(0)]>, #sbp.t<@dp, [B]>]} : {{.*}} -> tensor<64x16xf32, #sbp.t<@dp, [S(0)]>>
module {
  sbp.placement @dp cpu ranks [0, 1, 2, 3] hierarchy [4]
  func.func @column_weight() {
    %x = sbp.input "x" : tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.input "w" : tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>
    %y = sbp.matmul %x, %w : (tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>) -> tensor<64x16xf32>
    return
  }
}

// -----

// A result SBP fixed by the user wins over the cheaper choice.
// CHECK-LABEL: func.func @fixed_result
// CHECK: sbp.matmul %{{.*}}, %{{.*}} {sbp.operand_sbp = [#sbp.t<@dp, [B]>, #sbp.t<@dp, [S(1)]>]} : {{.*}} -> tensor<64x16xf32, #sbp.t<@dp, [S(1)]>>
module {
  sbp.placement @dp cpu ranks [0, 1, 2, 3] hierarchy [4]
  func.func @fixed_result() {
    %x = sbp.input "x" : tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.input "w" : tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>
    %y = sbp.matmul %x, %w : (tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>) -> tensor<64x16xf32, #sbp.t<@dp, [S(1)]>>
    return
  }
}

// -----

// 2-D hierarchy: each dimension picks its own signature, here data parallel
// on dim 0 and tensor (column) parallel on dim 1.
// CHECK-LABEL: func.func @two_d
// CHECK: sbp.matmul {{.*}}sbp.operand_sbp = [#sbp.t<@mesh, [S(0), B]>, #sbp.t<@mesh, [B, S(1)]>]{{.*}} -> tensor<64x32xf32, #sbp.t<@mesh, [S(0), S(1)]>>
// CHECK: sbp.relu {{.*}} -> tensor<64x32xf32, #sbp.t<@mesh, [S(0), S(1)]>>
module {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  func.func @two_d() {
    %x = sbp.input "x" : tensor<64x32xf32, #sbp.t<@mesh, [S(0), B]>>
    %w = sbp.input "w" : tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>
    %y = sbp.matmul %x, %w : (tensor<64x32xf32, #sbp.t<@mesh, [S(0), B]>>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<64x32xf32>
    %r = sbp.relu %y : (tensor<64x32xf32>) -> tensor<64x32xf32>
    return
  }
}

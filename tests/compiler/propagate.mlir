// sbp-propagate: every unannotated tensor gets the SBP of the cheapest
// signature; user-given SBPs win; chosen operand SBPs land in sbp.operand_sbp.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate | FileCheck %s
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

// -----

// An unannotated variable takes the SBP its consumer asks for when that costs
// less in total: the bias of a column-parallel layer becomes S(0), so that
// its gradient needs no all-gather; its momentum buffer follows it.
// CHECK-LABEL: module @free_bias
// CHECK: sbp.variable @b : tensor<6xf32, #sbp.t<@tp, [S(0)]>>
// CHECK-NEXT: sbp.variable @b.momentum : tensor<6xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.parameter @b : tensor<6xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.bias_add {{.*}}sbp.operand_sbp = [#sbp.t<@tp, [S(1)]>, #sbp.t<@tp, [S(0)]>]{{.*}} -> tensor<8x6xf32, #sbp.t<@tp, [S(1)]>>
// CHECK: sbp.sgd {{.*}}sbp.operand_sbp = [#sbp.t<@tp, [S(0)]>]{{.*}}variable = @b{{.*}} : tensor<6xf32, #sbp.t<@tp, [S(0)]>>
module @free_bias {
  sbp.placement @tp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<6x4xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @b : tensor<6xf32> init #sbp.init<zeros> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@tp, [B]>>
    %w = sbp.parameter @w : tensor<6x4xf32, #sbp.t<@tp, [S(0)]>>
    %b = sbp.parameter @b : tensor<6xf32>
    %h = sbp.matmul %x, %w {transpose_b = true} : (tensor<8x4xf32, #sbp.t<@tp, [B]>>, tensor<6x4xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<8x6xf32>
    %y = sbp.bias_add %h, %b : (tensor<8x6xf32>, tensor<6xf32>) -> tensor<8x6xf32>
    %r = sbp.relu %y : (tensor<8x6xf32>) -> tensor<8x6xf32>
    %loss = sbp.mean %r : (tensor<8x6xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// A variable the user split keeps its split: the input is gathered instead
// of the weight, although gathering the smaller weight costs less (compare
// @column_weight, where the weight is an input and is gathered).
// CHECK-LABEL: func.func @split_variable
// CHECK: sbp.matmul %{{.*}}, %{{.*}} {sbp.operand_sbp = [#sbp.t<@dp, [B]>, #sbp.t<@dp, [S(1)]>]} : {{.*}} -> tensor<64x16xf32, #sbp.t<@dp, [S(1)]>>
module {
  sbp.placement @dp cpu ranks [0, 1, 2, 3] hierarchy [4]
  sbp.variable @w : tensor<32x16xf32, #sbp.t<@dp, [S(1)]>> init #sbp.init<zeros> seed 1
  func.func @split_variable() {
    %x = sbp.input "x" : tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>
    %y = sbp.matmul %x, %w : (tensor<64x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32x16xf32, #sbp.t<@dp, [S(1)]>>) -> tensor<64x16xf32>
    return
  }
}

// -----

// Only when nothing propagates without it is a split variable gathered:
// sbp.output takes whole tensors.
// CHECK-LABEL: func.func @gather_when_needed
// CHECK: sbp.output "w" %{{.*}} {sbp.operand_sbp = [#sbp.t<@dp, [B]>]} : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
module {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<8xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 1
  func.func @gather_when_needed() {
    %w = sbp.parameter @w : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
    sbp.output "w" %w : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
    return
  }
}

// -----

// A momentum buffer the user laid out lays out its unannotated variable: the
// optimiser updates both elementwise.
// CHECK-LABEL: func.func @slot_lays_out_variable
// CHECK: sbp.parameter @w : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
// CHECK: sbp.sgd {{.*}}sbp.operand_sbp = [#sbp.t<@dp, [S(0)]>]{{.*}}variable = @w
module {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<8xf32> init #sbp.init<zeros> seed 1
  sbp.variable @m : tensor<8xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 2
  func.func @slot_lays_out_variable() {
    %x = sbp.input "x" : tensor<8xf32, #sbp.t<@dp, [B]>>
    %w = sbp.parameter @w : tensor<8xf32>
    sbp.output "w" %w : tensor<8xf32>
    sbp.sgd %x {lr = 0.1 : f32, momentum = 0.9 : f32, momentum_buffer = @m, variable = @w, weight_decay = 0.0 : f32} : tensor<8xf32, #sbp.t<@dp, [B]>>
    return
  }
}

// -----

// AdamW: the moments m and v of an unannotated variable follow its SBP (here
// the bias of a column-parallel layer in [in, out] layout), the step counter
// is broadcast.
// CHECK-LABEL: module @adamw_slots
// CHECK: sbp.variable @b : tensor<3xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK-NEXT: sbp.variable @b.adam_m : tensor<3xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK-NEXT: sbp.variable @b.adam_v : tensor<3xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK-NEXT: sbp.variable @b.adam_step : tensor<i32, #sbp.t<@mesh, [B, B]>>
module @adamw_slots {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @b : tensor<3xf32> init #sbp.init<zeros> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@mesh, [S(0), B]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>>
    %b = sbp.parameter @b : tensor<3xf32>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>, tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<8x3xf32>
    %zb = sbp.bias_add %z, %b : (tensor<8x3xf32>, tensor<3xf32>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %zb, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.0003, weight_decay = 0.1>} : tensor<f32>
    return
  }
}

// sbp-autodiff with AdamW, gradient clipping and dropout: zeroed moment slots
// <var>.adam_m / .adam_v of the variable's type and a scalar broadcast step
// counter <var>.adam_step; weight decay only on variables of rank >= 2; with
// max_grad_norm a square_sum per gradient, an add chain, clip_scale and the
// scale on every optimiser op; the gradient of dropout is dropout of dy with
// the same mask.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff | FileCheck %s

// CHECK-LABEL: module @adamw
// CHECK: sbp.variable @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>>
// CHECK-NEXT: sbp.variable @w.adam_m : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
// CHECK-NEXT: sbp.variable @w.adam_v : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
// CHECK-NEXT: sbp.variable @w.adam_step : tensor<i32, #sbp.t<@mesh, [B, B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
// CHECK-NEXT: sbp.variable @b : tensor<3xf32>
// An unannotated variable: its slots stay unannotated (sbp-propagate lays
// them out with it), its step counter is broadcast on the module's placement.
// CHECK-NEXT: sbp.variable @b.adam_m : tensor<3xf32> init #sbp.init<zeros
// CHECK-NEXT: sbp.variable @b.adam_v : tensor<3xf32> init #sbp.init<zeros
// CHECK-NEXT: sbp.variable @b.adam_step : tensor<i32, #sbp.t<@mesh, [B, B]>> init #sbp.init<zeros
// CHECK: func.func @train
// CHECK: %[[D:.*]] = sbp.dropout %{{.*}} {p = 2.000000e-01 : f32, seed = 11 : i64}
// CHECK: %[[DZ:.*]] = sbp.softmax_xent_grad
// CHECK: %[[DB:.*]] = sbp.reduce_rows %[[DZ]] : (tensor<8x3xf32>) -> tensor<3xf32>
// CHECK: %[[DW:.*]] = sbp.matmul %[[D]], %[[DZ]] {transpose_a = true} : {{.*}} -> tensor<4x3xf32>
// The input needs no gradient, so the dropout of the input gets none either.
// CHECK-NOT: sbp.dropout
// CHECK: %[[SQB:.*]] = sbp.square_sum %[[DB]] : (tensor<3xf32>) -> tensor<f32>
// CHECK-NEXT: %[[SQW:.*]] = sbp.square_sum %[[DW]] : (tensor<4x3xf32>) -> tensor<f32>
// CHECK-NEXT: %[[SUM:.*]] = sbp.add %[[SQB]], %[[SQW]] : (tensor<f32>, tensor<f32>) -> tensor<f32>
// CHECK-NEXT: %[[SCALE:.*]] = sbp.clip_scale %[[SUM]] {max_norm = 1.000000e+00 : f32} : (tensor<f32>) -> tensor<f32>
// CHECK-NEXT: sbp.adamw %[[DB]], %[[SCALE]] {beta1 = 0.899999976 : f32, beta2 = 0.949999988 : f32, eps = 9.99999993E-9 : f32, lr = 3.000000e-04 : f32, m = @b.adam_m, step = @b.adam_step, v = @b.adam_v, variable = @b, weight_decay = 0.000000e+00 : f32} : tensor<3xf32>, tensor<f32>
// CHECK-NEXT: sbp.adamw %[[DW]], %[[SCALE]] {{{.*}}m = @w.adam_m, step = @w.adam_step, v = @w.adam_v, variable = @w, weight_decay = 1.000000e-01 : f32} : tensor<4x3xf32>, tensor<f32>
// CHECK-NEXT: return
module @adamw {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @b : tensor<3xf32> init #sbp.init<zeros, 0.0, 0.0> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@mesh, [S(0), B]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>>
    %b = sbp.parameter @b : tensor<3xf32>
    %xd = sbp.dropout %x {p = 0.2 : f32, seed = 11 : i64} : (tensor<8x4xf32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8x4xf32>
    %z = sbp.matmul %xd, %w : (tensor<8x4xf32>, tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<8x3xf32>
    %zb = sbp.bias_add %z, %b : (tensor<8x3xf32>, tensor<3xf32>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %zb, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.0003, beta2 = 0.95, weight_decay = 0.1>, max_grad_norm = 1.0 : f32} : tensor<f32>
    return
  }
}

// -----

// Dropout between parameters: its gradient is the same dropout (p, seed) of
// dy. Without max_grad_norm the optimiser ops take no scale.
// CHECK-LABEL: module @dropout
// CHECK: %[[H:.*]] = sbp.matmul
// CHECK: %[[HD:.*]] = sbp.dropout %[[H]] {p = 5.000000e-01 : f32, seed = 3 : i64} : (tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK: %[[DHD:.*]] = sbp.matmul %{{.*}}, %{{.*}} {transpose_b = true}
// CHECK: %[[G2:.*]] = sbp.matmul %[[HD]], %{{.*}} {transpose_a = true}
// CHECK: %[[DH:.*]] = sbp.dropout %[[DHD]] {p = 5.000000e-01 : f32, seed = 3 : i64} : (tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK: %[[G1:.*]] = sbp.matmul %{{.*}}, %[[DH]] {transpose_a = true}
// CHECK-NOT: sbp.clip_scale
// CHECK: sbp.adamw %[[G2]] {{{.*}}variable = @w2, weight_decay = 0.000000e+00 : f32} : tensor<4x4xf32>
// CHECK: sbp.adamw %[[G1]] {{{.*}}variable = @w1, weight_decay = 0.000000e+00 : f32} : tensor<4x4xf32>
module @dropout {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w1 : tensor<4x4xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.1> seed 1
  sbp.variable @w2 : tensor<4x4xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.1> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<2x4xf32, #sbp.t<@one, [B]>>
    %w1 = sbp.parameter @w1 : tensor<4x4xf32, #sbp.t<@one, [B]>>
    %w2 = sbp.parameter @w2 : tensor<4x4xf32, #sbp.t<@one, [B]>>
    %h = sbp.matmul %x, %w1 : (tensor<2x4xf32, #sbp.t<@one, [B]>>, tensor<4x4xf32, #sbp.t<@one, [B]>>) -> tensor<2x4xf32>
    %hd = sbp.dropout %h {p = 0.5 : f32, seed = 3 : i64} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %o = sbp.matmul %hd, %w2 : (tensor<2x4xf32>, tensor<4x4xf32, #sbp.t<@one, [B]>>) -> tensor<2x4xf32>
    %loss = sbp.mean %o : (tensor<2x4xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.01, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// SGD with clipping: momentum buffers as before, the scale on every sbp.sgd.
// CHECK-LABEL: module @sgd_clip
// CHECK: sbp.variable @w.momentum
// CHECK: %[[SQ:.*]] = sbp.square_sum
// CHECK-NEXT: %[[SCALE:.*]] = sbp.clip_scale %[[SQ]] {max_norm = 5.000000e-01 : f32}
// CHECK-NEXT: sbp.sgd %{{.*}}, %[[SCALE]] {lr = 1.000000e-01 : f32, momentum = 0.899999976 : f32, momentum_buffer = @w.momentum, variable = @w, weight_decay = 0.00999999977 : f32} : tensor<4x3xf32>, tensor<f32>
module @sgd_clip {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@one, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@one, [B]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@one, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@one, [B]>>, tensor<4x3xf32, #sbp.t<@one, [B]>>) -> tensor<8x3xf32>
    %loss = sbp.mean %z : (tensor<8x3xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.9, weight_decay = 0.01>, max_grad_norm = 0.5 : f32} : tensor<f32>
    return
  }
}

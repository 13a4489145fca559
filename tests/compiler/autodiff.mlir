// sbp-autodiff: the backward of the loss (each op's gradient rule, fan-out
// summed with sbp.add), momentum buffers and one sbp.sgd per parameter.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff | FileCheck %s

// CHECK-LABEL: module @linear
// CHECK: sbp.variable @w : tensor<4x3xf32, #sbp.t<@dp, [B]>> init
// CHECK-NEXT: sbp.variable @w.momentum : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros
// CHECK: sbp.variable @b.momentum : tensor<3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros
// CHECK: func.func @train
// CHECK-NOT: sbp.minimize
// CHECK: %[[LOSS:.*]] = sbp.mean
// CHECK: %[[ONE:.*]] = sbp.fill 1.000000e+00 : tensor<f32>
// CHECK: %[[DL:.*]] = sbp.mean_grad %[[ONE]] : (tensor<f32>) -> tensor<8xf32>
// CHECK: %[[DZ:.*]] = sbp.softmax_xent_grad %{{.*}}, %{{.*}}, %[[DL]]
// CHECK: %[[DB:.*]] = sbp.reduce_rows %[[DZ]] : (tensor<8x3xf32>) -> tensor<3xf32>
// The input needs no gradient: only dW = x^T dZ is built.
// CHECK-NOT: transpose_b = true
// CHECK: %[[DW:.*]] = sbp.matmul %{{.*}}, %[[DZ]] {transpose_a = true} : {{.*}} -> tensor<4x3xf32>
// CHECK: sbp.sgd %[[DB]] {lr = 1.000000e-01 : f32, momentum = 0.899999976 : f32, momentum_buffer = @b.momentum, variable = @b
// CHECK: sbp.sgd %[[DW]] {{{.*}}momentum_buffer = @w.momentum, variable = @w
// CHECK-NOT: sbp.minimize
module @linear {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @b : tensor<3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@dp, [B]>>
    %b = sbp.parameter @b : tensor<3xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %zb = sbp.bias_add %z, %b : (tensor<8x3xf32>, tensor<3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %zb, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// A parameter used twice: the two gradient contributions are summed; without
// momentum no buffer is created.
// CHECK-LABEL: module @shared
// CHECK-NOT: momentum
// CHECK: %[[Y:.*]] = sbp.relu
// CHECK: %[[G1:.*]] = sbp.matmul %[[Y]], %{{.*}} {transpose_a = true}
// CHECK: sbp.relu_grad %{{.*}}, %[[Y]]
// CHECK: %[[G2:.*]] = sbp.matmul %{{.*}}, %{{.*}} {transpose_a = true}
// CHECK: %[[SUM:.*]] = sbp.add %[[G1]], %[[G2]]
// CHECK: sbp.sgd %[[SUM]] {lr = 1.000000e-01 : f32, momentum = 0.000000e+00 : f32, variable = @w, weight_decay = 0.000000e+00 : f32}
module @shared {
  sbp.placement @dp cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4x4xf32, #sbp.t<@dp, [B]>> init #sbp.init<normal, 0.0, 0.1> seed 3
  func.func @train() {
    %x = sbp.input "x" : tensor<2x4xf32, #sbp.t<@dp, [B]>>
    %w = sbp.parameter @w : tensor<4x4xf32, #sbp.t<@dp, [B]>>
    %h = sbp.matmul %x, %w : (tensor<2x4xf32, #sbp.t<@dp, [B]>>, tensor<4x4xf32, #sbp.t<@dp, [B]>>) -> tensor<2x4xf32>
    %r = sbp.relu %h : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %o = sbp.matmul %r, %w : (tensor<2x4xf32>, tensor<4x4xf32, #sbp.t<@dp, [B]>>) -> tensor<2x4xf32>
    %loss = sbp.mean %o : (tensor<2x4xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1>} : tensor<f32>
    return
  }
}

// sbp-compress-gradients takes a gradient compressed under AdamW out of the
// clipping norm only where its square_sum reaches the norm alone (as
// sbp-autodiff builds it); here a metric also reads it: an error at the
// optimiser, not a norm left wrong.
// RUN: not sbpflow-opt %s "--sbp-compress-gradients=policy=dgc:0.001 min-elements=0" 2>&1 | FileCheck %s
// CHECK: error: sbp-compress-gradients: cannot take a gradient compressed under AdamW out of the clipping norm
// CHECK-NEXT: sbp.adamw

module @mixed {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -1.000000e-01, 1.000000e-01> seed 1
  sbp.variable @w.adam_m : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  sbp.variable @w.adam_v : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  sbp.variable @w.adam_step : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  sbp.variable @b : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 2
  sbp.variable @b.adam_m : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  sbp.variable @b.adam_v : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  sbp.variable @b.adam_step : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0
  func.func @train() {
    %0 = sbp.input "x" : tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>
    %1 = sbp.parameter @w : tensor<64x32xf32, #sbp.t<@dp, [B]>>
    %2 = sbp.parameter @b : tensor<32xf32, #sbp.t<@dp, [B]>>
    %3 = sbp.matmul %0, %1 : (tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>, tensor<64x32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>
    %4 = sbp.bias_add %3, %2 : (tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>
    %5 = sbp.input "y" : tensor<256xi32, #sbp.t<@dp, [S(0)]>>
    %6 = sbp.softmax_xent %4, %5 : (tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<256xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<256xf32, #sbp.t<@dp, [S(0)]>>
    %7 = sbp.mean %6 : (tensor<256xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<f32, #sbp.t<@dp, [P(sum)]>>
    %8 = sbp.fill 1.000000e+00 : tensor<f32, #sbp.t<@dp, [B]>>
    %9 = sbp.mean_grad %8 : (tensor<f32, #sbp.t<@dp, [B]>>) -> tensor<256xf32, #sbp.t<@dp, [S(0)]>>
    %10 = sbp.softmax_xent_grad %4, %5, %9 : (tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>, tensor<256xi32, #sbp.t<@dp, [S(0)]>>, tensor<256xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>
    %11 = sbp.reduce_rows %10 : (tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<32xf32, #sbp.t<@dp, [P(sum)]>>
    %12 = sbp.matmul %0, %10 {transpose_a = true} : (tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>, tensor<256x32xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<64x32xf32, #sbp.t<@dp, [P(sum)]>>
    %13 = sbp.all_reduce %11 {dim = 0 : i64} : (tensor<32xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<32xf32, #sbp.t<@dp, [B]>>
    %14 = sbp.square_sum %13 : (tensor<32xf32, #sbp.t<@dp, [B]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    %15 = sbp.all_reduce %12 {dim = 0 : i64} : (tensor<64x32xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<64x32xf32, #sbp.t<@dp, [B]>>
    %16 = sbp.square_sum %15 : (tensor<64x32xf32, #sbp.t<@dp, [B]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    %17 = sbp.add %14, %16 : (tensor<f32, #sbp.t<@dp, [B]>>, tensor<f32, #sbp.t<@dp, [B]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    %18 = sbp.clip_scale %17 {max_norm = 1.000000e+00 : f32} : (tensor<f32, #sbp.t<@dp, [B]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    sbp.adamw %13, %18 {beta1 = 0.899999976 : f32, beta2 = 9.900000e-01 : f32, eps = 9.99999993E-9 : f32, lr = 1.000000e-03 : f32, m = @b.adam_m, step = @b.adam_step, v = @b.adam_v, variable = @b, weight_decay = 0.000000e+00 : f32} : tensor<32xf32, #sbp.t<@dp, [B]>>, tensor<f32, #sbp.t<@dp, [B]>>
    sbp.adamw %15, %18 {beta1 = 0.899999976 : f32, beta2 = 9.900000e-01 : f32, eps = 9.99999993E-9 : f32, lr = 1.000000e-03 : f32, m = @w.adam_m, step = @w.adam_step, v = @w.adam_v, variable = @w, weight_decay = 1.000000e-01 : f32} : tensor<64x32xf32, #sbp.t<@dp, [B]>>, tensor<f32, #sbp.t<@dp, [B]>>
    sbp.metric "w.norm" %16 : tensor<f32, #sbp.t<@dp, [B]>>
    return
  }
}


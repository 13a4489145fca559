// sbp-autodiff errors of the optimiser slots.
// RUN: not sbpflow-opt %s --sbp-autodiff 2>&1 | FileCheck %s

// A variable already named like a slot but of another type is an error.
// CHECK: autodiff_adamw_errors.mlir:[[@LINE+4]]:3: error: 'sbp.variable' op exists with type 'tensor<3xf32, #sbp.t<@one, [B]>>'; cannot hold 'tensor<4x3xf32, #sbp.t<@one, [B]>>' for @w
module @clash {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@one, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @w.adam_v : tensor<3xf32, #sbp.t<@one, [B]>> init #sbp.init<zeros> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@one, [B]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@one, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@one, [B]>>, tensor<4x3xf32, #sbp.t<@one, [B]>>) -> tensor<8x3xf32>
    %loss = sbp.mean %z : (tensor<8x3xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.1>} : tensor<f32>
    return
  }
}

// sbp-autodiff errors: a loss that no parameter feeds.
// RUN: not sbpflow-opt %s --sbp-autodiff 2>&1 | FileCheck %s

// CHECK: autodiff_errors.mlir:[[@LINE+8]]:5: error: 'sbp.minimize' op loss does not depend on any parameter: nothing to train
module {
  sbp.placement @dp cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<4xf32, #sbp.t<@dp, [B]>>
    %w = sbp.parameter @w : tensor<4xf32, #sbp.t<@dp, [B]>>
    %loss = sbp.mean %x : (tensor<4xf32, #sbp.t<@dp, [B]>>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1>} : tensor<f32>
    return
  }
}

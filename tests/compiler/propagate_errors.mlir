// sbp-propagate errors that name what is wrong.
// RUN: not sbpflow-opt %s --split-input-file --sbp-propagate 2>&1 | FileCheck %s

// A momentum buffer laid out unlike its variable: sgd updates both
// elementwise, shard by shard.
// CHECK: propagate_errors.mlir{{.*}}: error: 'sbp.variable' op optimiser state m is laid out as #sbp.t<@dp, [S(0)]> but its variable w as #sbp.t<@dp, [B]>; an optimiser updates both elementwise, so they need the same SBP
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @w : tensor<8xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1
sbp.variable @m : tensor<8xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 2
func.func @train() {
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@dp, [B]>>
  %w = sbp.parameter @w : tensor<8xf32, #sbp.t<@dp, [B]>>
  %y = sbp.add %x, %w : (tensor<8xf32, #sbp.t<@dp, [B]>>, tensor<8xf32, #sbp.t<@dp, [B]>>) -> tensor<8xf32>
  sbp.sgd %y {lr = 0.1 : f32, momentum = 0.9 : f32, momentum_buffer = @m, variable = @w, weight_decay = 0.0 : f32} : tensor<8xf32>
  return
}

// -----

// A variable without an SBP needs a placement to be put on.
// CHECK: propagate_errors.mlir{{.*}}: error: 'sbp.variable' op variable w has no SBP and the module declares no sbp.placement to put it on
sbp.variable @w : tensor<8xf32> init #sbp.init<zeros> seed 1

// -----

// No signature: the error names the op, its inputs' SBPs and its signatures,
// also when the search is on.
// CHECK: propagate_errors.mlir{{.*}}: error: 'sbp.relu' op has no SBP signature for inputs S(0) on hierarchy dim 0: no signature produces the result SBP fixed in its type; supported signatures: S(0) -> S(0); S(1) -> S(1); B -> B
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @b : tensor<4xf32> init #sbp.init<zeros> seed 1
func.func @relu_to_partial() {
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
  %b = sbp.parameter @b : tensor<4xf32>
  %r = sbp.relu %a : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
  %y = sbp.bias_add %a, %b : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4xf32>) -> tensor<8x4xf32>
  return
}

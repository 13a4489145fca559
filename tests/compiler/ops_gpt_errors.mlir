// Verifier errors of the transformer ops and the optimisers, each at the
// offending op (or attribute).
// RUN: sbpflow-opt %s --split-input-file --verify-diagnostics

func.func @f() {
  %a = sbp.input "a" : tensor<4xf32>
  %b = sbp.input "b" : tensor<4x3xf32>
  // expected-error @+1 {{'sbp.matmul' op lhs must have rank >= 2, got 'tensor<4xf32>'}}
  %c = sbp.matmul %a, %b : (tensor<4xf32>, tensor<4x3xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<2x4x8xf32>
  %b = sbp.input "b" : tensor<6x3xf32>
  // expected-error @+1 {{'sbp.matmul' op inner dimensions differ: 8 (lhs, transposed) vs 6 (rhs)}}
  %c = sbp.matmul %a, %b {transpose_a = true} : (tensor<2x4x8xf32>, tensor<6x3xf32>) -> tensor<8x3xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<2x4x8xf32>
  %b = sbp.input "b" : tensor<6x8xf32>
  // expected-error @+1 {{'sbp.matmul' op result #0 has type 'tensor<8x6xf32>' but the operands give 'tensor<2x4x6xf32>'}}
  %c = sbp.matmul %a, %b {transpose_b = true} : (tensor<2x4x8xf32>, tensor<6x8xf32>) -> tensor<8x6xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %b = sbp.input "b" : tensor<3x8xf32>
  // expected-error @+1 {{'sbp.bias_add' op bias shape [3, 8] does not match the trailing axes [4, 8] of the input}}
  %y = sbp.bias_add %x, %b : (tensor<2x4x8xf32>, tensor<3x8xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  // expected-error @+1 {{'sbp.reduce_rows' op result shape [2, 8] is not the trailing axes of the input [2, 4, 8]}}
  %y = sbp.reduce_rows %x : (tensor<2x4x8xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  // expected-error @+1 {{'sbp.reduce_rows' op result rank 3 must lie in [1, 2]}}
  %y = sbp.reduce_rows %x : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<2x4x11xf32>
  %y = sbp.input "y" : tensor<2x3xi32>
  // expected-error @+1 {{'sbp.softmax_xent' op labels shape [2, 3] does not match the leading axes [2, 4] of the logits}}
  %c = sbp.softmax_xent %l, %y : (tensor<2x4x11xf32>, tensor<2x3xi32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f() {
  %t = sbp.input "t" : tensor<11x8xf32>
  %ids = sbp.input "ids" : tensor<2x4xf32>
  // expected-error @+1 {{'sbp.embedding' op ids must have element type i32, got 'f32'}}
  %e = sbp.embedding %t, %ids : (tensor<11x8xf32>, tensor<2x4xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f() {
  %dy = sbp.input "dy" : tensor<2x4x8xf32>
  %ids = sbp.input "ids" : tensor<2x5xi32>
  // expected-error @+1 {{'sbp.embedding_grad' op dy shape [2, 4, 8] is not ids' shape ++ [C] = [2, 5, 8]}}
  %e = sbp.embedding_grad %dy, %ids : (tensor<2x4x8xf32>, tensor<2x5xi32>) -> tensor<11x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %g = sbp.input "g" : tensor<4xf32>
  %b = sbp.input "b" : tensor<8xf32>
  // expected-error @+1 {{'sbp.layer_norm' op gamma length 4 does not match the 8 channels (last axis) of the input}}
  %y = sbp.layer_norm %x, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<4xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %g = sbp.input "g" : tensor<8xf32>
  // expected-error @+1 {{'sbp.layer_norm_grad' op eps must be positive, got 0.000000e+00}}
  %dx, %dg, %db = sbp.layer_norm_grad %x, %x, %g {eps = 0.0 : f32} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<8xf32>) -> (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %g = sbp.input "g" : tensor<8xf32>
  // expected-error @+1 {{'sbp.layer_norm_grad' op result #1 has type 'tensor<4xf32>' but the operands give 'tensor<8xf32>'}}
  %dx, %dg, %db = sbp.layer_norm_grad %x, %x, %g {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<8xf32>) -> (tensor<2x4x8xf32>, tensor<4xf32>, tensor<8xf32>)
  return
}

// -----

func.func @f() {
  %q = sbp.input "q" : tensor<2x4x8xf32>
  // expected-error @+1 {{'sbp.causal_attention' op heads 3 must be positive and divide the 8 channels}}
  %a = sbp.causal_attention %q, %q, %q {heads = 3 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f() {
  %q = sbp.input "q" : tensor<2x4x8xf32>
  %k = sbp.input "k" : tensor<2x5x8xf32>
  // expected-error @+1 {{'sbp.causal_attention_grad' op q and k must have the same shape and element type, got 'tensor<2x4x8xf32>' and 'tensor<2x5x8xf32>'}}
  %dq, %dk, %dv = sbp.causal_attention_grad %q, %q, %k, %q {heads = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x5x8xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<4x8xf32>
  // expected-error @+1 {{'sbp.dropout' op probability p must lie in [0, 1), got 1.000000e+00}}
  %y = sbp.dropout %x {p = 1.0 : f32, seed = 1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4xf32>
  // expected-error @+1 {{'sbp.reshape' op cannot reshape 'tensor<2x4xf32>' into 'tensor<3x3xf32>': element count or type differs}}
  %y = sbp.reshape %x : (tensor<2x4xf32>) -> tensor<3x3xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4xf32>
  // expected-error @+1 {{'sbp.transpose' op perm [0, 0] is not a permutation of the 2 axes of the input}}
  %y = sbp.transpose %x {perm = array<i64: 0, 0>} : (tensor<2x4xf32>) -> tensor<2x2xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x8xf32>
  // expected-error @+1 {{'sbp.narrow' op range [6, 10) on axis 1 is outside the input's length 8}}
  %y = sbp.narrow %x {axis = 1 : i64, begin = 6 : i64} : (tensor<2x8xf32>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x8xf32>
  // expected-error @+1 {{'sbp.narrow' op result 'tensor<3x4xf32>' must differ from the input 'tensor<2x8xf32>' on axis 1 only}}
  %y = sbp.narrow %x {axis = 1 : i64, begin = 0 : i64} : (tensor<2x8xf32>) -> tensor<3x4xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x8xf32>
  // expected-error @+1 {{'sbp.narrow' op axis 2 is out of range for rank 2}}
  %y = sbp.narrow %x {axis = 2 : i64, begin = 0 : i64} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<2x4xf32>
  // expected-error @+1 {{'sbp.narrow_grad' op range [6, 10) on axis 1 is outside the result's length 8}}
  %y = sbp.narrow_grad %x {axis = 1 : i64, begin = 6 : i64} : (tensor<2x4xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<2x4xf32>
  %b = sbp.input "b" : tensor<3x4xf32>
  // expected-error @+1 {{'sbp.concat' op operand #1 'tensor<3x4xf32>' differs from 'tensor<2x4xf32>' on axis 0 (concat axis is 1)}}
  %y = sbp.concat %a, %b {axis = 1 : i64} : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<2x4xf32>
  // expected-error @+1 {{'sbp.concat' op result #0 has type 'tensor<2x8xf32>' but the operands give 'tensor<2x12xf32>'}}
  %y = sbp.concat %a, %a, %a {axis = 1 : i64} : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<2x4xi32>
  // expected-error @+1 {{'sbp.square_sum' op input must have element type f32, got 'i32'}}
  %y = sbp.square_sum %a : (tensor<2x4xi32>) -> tensor<f32>
  return
}

// -----

func.func @f() {
  %s = sbp.input "s" : tensor<f32>
  // expected-error @+1 {{'sbp.clip_scale' op max_norm must be positive, got 0.000000e+00}}
  %y = sbp.clip_scale %s {max_norm = 0.0 : f32} : (tensor<f32>) -> tensor<f32>
  return
}

// -----

func.func @f() {
  %s = sbp.input "s" : tensor<2xf32>
  // expected-error @+1 {{'sbp.clip_scale' op sumsq must have rank 0, got 'tensor<2xf32>'}}
  %y = sbp.clip_scale %s {max_norm = 1.0 : f32} : (tensor<2xf32>) -> tensor<f32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<f32>
  // expected-error @+1 {{'sbp.minimize' op max_grad_norm must be positive, got -1.000000e+00}}
  sbp.minimize %l {optimizer = #sbp.sgd<lr = 0.1>, max_grad_norm = -1.0 : f32} : tensor<f32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<f32>
  // expected-error @+1 {{'sbp.minimize' op attribute 'optimizer' failed to satisfy constraint}}
  sbp.minimize %l {optimizer = 0.1 : f32} : tensor<f32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<f32>
  // expected-error @+1 {{#sbp.adamw needs lr}}
  sbp.minimize %l {optimizer = #sbp.adamw<beta1 = 0.9>} : tensor<f32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<f32>
  // expected-error @+1 {{#sbp.adamw betas must lie in [0, 1), got beta1 = 1.000000e+00, beta2 = 9.990000e-01}}
  sbp.minimize %l {optimizer = #sbp.adamw<lr = 0.1, beta1 = 1.0>} : tensor<f32>
  return
}

// -----

func.func @f() {
  %l = sbp.input "l" : tensor<f32>
  // expected-error @+1 {{unknown adamw parameter 'momentum' (expected lr, beta1, beta2, eps, weight_decay)}}
  sbp.minimize %l {optimizer = #sbp.adamw<lr = 0.1, momentum = 0.9>} : tensor<f32>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @w : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1
sbp.variable @w.m : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @w.v : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f() {
  %g = sbp.input "g" : tensor<4xf32>
  // expected-error @+1 {{'sbp.adamw' op step counter @w.m must be an i32 scalar, got 'tensor<4xf32, #sbp.t<@dp, [B]>>'}}
  sbp.adamw %g {variable = @w, m = @w.m, v = @w.v, step = @w.m, lr = 0.001 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4xf32>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @w : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1
sbp.variable @other : tensor<5xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @w.step : tensor<f32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f() {
  %g = sbp.input "g" : tensor<4xf32>
  // expected-error @+1 {{'sbp.adamw' op second moment @other has a different shape than @w}}
  sbp.adamw %g {variable = @w, m = @w, v = @other, step = @w.step, lr = 0.001 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f() {
  %g = sbp.input "g" : tensor<4xf32>
  // expected-error @+1 {{'sbp.adamw' op betas must lie in [0, 1), got beta1 = 9.000000e-01, beta2 = 1.000000e+00}}
  sbp.adamw %g {variable = @w, m = @w, v = @w, step = @w, lr = 0.001 : f32, beta1 = 0.9 : f32, beta2 = 1.0 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f() {
  %g = sbp.input "g" : tensor<4xf32>
  // expected-error @+1 {{'sbp.sgd' op gradient scale must be an f32 scalar (tensor<f32>), got 'tensor<4xf32>'}}
  sbp.sgd %g, %g {variable = @w, lr = 0.1 : f32, momentum = 0.0 : f32, weight_decay = 0.0 : f32} : tensor<4xf32>, tensor<4xf32>
  return
}

// -----

func.func @f() {
  %g = sbp.input "g" : tensor<4xf32>
  // expected-error @+1 {{'sbp.output' op needs a non-empty name}}
  sbp.output "" %g : tensor<4xf32>
  return
}

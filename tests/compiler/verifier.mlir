// Verifier errors of the sbp dialect, each at the offending op.
// RUN: sbpflow-opt %s --split-input-file --verify-diagnostics

// expected-error @+1 {{'sbp.placement' op hierarchy product 4 does not match the number of ranks 3}}
sbp.placement @dp cpu ranks [0, 1, 2] hierarchy [2, 2]

// -----

// expected-error @+1 {{'sbp.placement' op rank 1 appears more than once}}
sbp.placement @dp cpu ranks [0, 1, 1, 2] hierarchy [4]

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<5x3xf32>
  // expected-error @+1 {{'sbp.matmul' op inner dimensions differ: 4 (lhs) vs 5 (rhs)}}
  %c = sbp.matmul %a, %b : (tensor<8x4xf32>, tensor<5x3xf32>) -> tensor<8x3xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<3xf32>
  // expected-error @+1 {{'sbp.bias_add' op bias length 3 does not match the 4 columns of the input}}
  %c = sbp.bias_add %a, %b : (tensor<8x4xf32>, tensor<3xf32>) -> tensor<8x4xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<8xf32>
  // expected-error @+1 {{'sbp.softmax_xent' op labels must have element type i32, got 'f32'}}
  %c = sbp.softmax_xent %a, %b : (tensor<8x4xf32>, tensor<8xf32>) -> tensor<8xf32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<6xi32>
  // expected-error @+1 {{'sbp.count_correct' op labels length 6 does not match the 8 rows of the logits}}
  %c = sbp.count_correct %a, %b : (tensor<8x4xf32>, tensor<6xi32>) -> tensor<f32>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  // expected-error @+1 {{'sbp.relu' op result #0 has type 'tensor<4x8xf32>' but the operands give 'tensor<8x4xf32>'}}
  %c = sbp.relu %a : (tensor<8x4xf32>) -> tensor<4x8xf32>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{'sbp.input' op result #0 splits axis 2 of a rank-2 tensor}}
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@dp, [S(2)]>>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{'sbp.input' op result #0 references undeclared placement @nowhere}}
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@nowhere, [B]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{'sbp.input' op result #0 has 2 SBP dimension(s) but placement @dp has a hierarchy of 1}}
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@dp, [B, B]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @w : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 1
func.func @f() {
  // expected-error @+1 {{'sbp.parameter' op result type 'tensor<4xf32, #sbp.t<@dp, [S(0)]>>' differs from the type of variable @w}}
  %w = sbp.parameter @w : tensor<4xf32, #sbp.t<@dp, [S(0)]>>
  return
}

// -----

// A variable without an encoding is fine (sbp-propagate chooses one); a
// partial one is not: it would hold no whole value.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @free : tensor<4xf32> init #sbp.init<zeros, 0.0, 0.0> seed 1
// expected-error @+1 {{'sbp.variable' op variable w cannot be partial (P(sum))}}
sbp.variable @w : tensor<4xf32, #sbp.t<@dp, [P(sum)]>> init #sbp.init<zeros, 0.0, 0.0> seed 1

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  %a = sbp.input "a" : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
  // expected-error @+1 {{'sbp.all_reduce' op expects P -> B on dim 0, got S(0) -> B}}
  %b = sbp.all_reduce %a {dim = 0 : i64} : (tensor<8xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32, #sbp.t<@dp, [B]>>
  return
}

// -----

sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
func.func @f() {
  %a = sbp.input "a" : tensor<8xf32, #sbp.t<@mesh, [S(0), S(0)]>>
  // expected-error @+1 {{'sbp.all_gather' op changes hierarchy dimension 1 (S(0) -> B) but acts only on dim 0}}
  %b = sbp.all_gather %a {dim = 0 : i64} : (tensor<8xf32, #sbp.t<@mesh, [S(0), S(0)]>>) -> tensor<8xf32, #sbp.t<@mesh, [B, B]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{unknown partial reduction 'avg' (expected sum, max or min)}}
  %a = sbp.input "a" : tensor<8xf32, #sbp.t<@dp, [P(avg)]>>
  return
}

// -----

func.func @f() {
  %a = sbp.input "a" : tensor<8xf32>
  // expected-error @+1 {{'sbp.sgd' op momentum 9.000000e-01 needs a momentum_buffer variable}}
  sbp.sgd %a {variable = @w, lr = 0.1 : f32, momentum = 0.9 : f32, weight_decay = 0.0 : f32} : tensor<8xf32>
  return
}

// -----

// Mixed precision: the operands of a matmul share one element type.
func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<4x3xbf16>
  // expected-error @+1 {{'sbp.matmul' op operands must have the same element type, got 'f32' and 'bf16'}}
  %c = sbp.matmul %a, %b : (tensor<8x4xf32>, tensor<4x3xbf16>) -> tensor<8x3xf32>
  return
}

// -----

// An f32 product may not be narrowed by the matmul itself.
func.func @f() {
  %a = sbp.input "a" : tensor<8x4xf32>
  %b = sbp.input "b" : tensor<4x3xf32>
  // expected-error @+1 {{'sbp.matmul' op result #0 has type 'tensor<8x3xbf16>' but the operands give 'tensor<8x3xf32>'}}
  %c = sbp.matmul %a, %b : (tensor<8x4xf32>, tensor<4x3xf32>) -> tensor<8x3xbf16>
  return
}

// -----

// layer_norm's gamma and beta are f32 master weights.
func.func @f() {
  %x = sbp.input "x" : tensor<2x8xbf16>
  %g = sbp.input "g" : tensor<8xbf16>
  %b = sbp.input "b" : tensor<8xf32>
  // expected-error @+1 {{'sbp.layer_norm' op gamma must have element type f32, got 'bf16'}}
  %y = sbp.layer_norm %x, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x8xbf16>, tensor<8xbf16>, tensor<8xf32>) -> tensor<2x8xbf16>
  return
}

// -----

// Losses and reductions to a scalar are f32.
func.func @f() {
  %x = sbp.input "x" : tensor<8xbf16>
  // expected-error @+1 {{'sbp.mean' op input must have element type f32, got 'bf16'}}
  %m = sbp.mean %x : (tensor<8xbf16>) -> tensor<f32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<8xi32>
  // expected-error @+1 {{'sbp.cast' op input must have element type f32 or bf16, got 'i32'}}
  %y = sbp.cast %x : (tensor<8xi32>) -> tensor<8xbf16>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<8xf32>
  // expected-error @+1 {{'sbp.cast' op result #0 has type 'tensor<4xbf16>' but the operands give 'tensor<8xbf16>'}}
  %y = sbp.cast %x : (tensor<8xf32>) -> tensor<4xbf16>
  return
}

// Verifier errors of #sbp.codec and of a compressed sbp.all_reduce, each at
// the offending attribute or op.
// RUN: sbpflow-opt %s --split-input-file --verify-diagnostics

// expected-error @+1 {{unknown codec 'zip'}}
func.func @f() attributes {c = #sbp.codec<zip>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk> needs a density in (0, 1], got 0}}
func.func @f() attributes {c = #sbp.codec<topk>} { return }

// -----

// expected-error @+1 {{#sbp.codec<qsgd> needs 2 <= bits <= 8 and bucket >= 1, got bits = 9, bucket = 512}}
func.func @f() attributes {c = #sbp.codec<qsgd, bits = 9>} { return }

// -----

// expected-error @+1 {{#sbp.codec<sign> needs bucket >= 1, got 0}}
func.func @f() attributes {c = #sbp.codec<sign, bucket = 0>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk>: chunk and decay are topk2bit's (0 <= chunk <= 65536, 0 < decay <= 1), got chunk = 8, decay = 1}}
func.func @f() attributes {c = #sbp.codec<topk, density = 0.1, chunk = 8>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk2bit>: chunk and decay are topk2bit's (0 <= chunk <= 65536, 0 < decay <= 1), got chunk = 70000, decay = 1}}
func.func @f() attributes {c = #sbp.codec<topk2bit, density = 0.1, chunk = 70000>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk2bit>: chunk and decay are topk2bit's (0 <= chunk <= 65536, 0 < decay <= 1), got chunk = 16, decay = 0}}
func.func @f() attributes {c = #sbp.codec<topk2bit, density = 0.1, chunk = 16, decay = 0.0>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk>: temperature is edit's (> 0, or 0 for equal weights), got 2}}
func.func @f() attributes {c = #sbp.codec<topk, density = 0.1, temperature = 2.0>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk>: senders is topk2bit's (0: the sum, 1: each index's mean over the ranks that sent it), got 1}}
func.func @f() attributes {c = #sbp.codec<topk, density = 0.1, senders = 1>} { return }

// -----

// expected-error @+1 {{#sbp.codec<powersgd> needs rank >= 1, got 0}}
func.func @f() attributes {c = #sbp.codec<powersgd>} { return }

// -----

// expected-error @+1 {{#sbp.codec<topk>: only dgc and sign keep a momentum, and only dgc clips (and topk and topk2bit under AdamW)}}
func.func @f() attributes {c = #sbp.codec<topk, density = 0.1, momentum = 0.9>} { return }

// -----

// expected-error @+1 {{#sbp.codec<sign>: only dgc and sign keep a momentum, and only dgc clips (and topk and topk2bit under AdamW)}}
func.func @f() attributes {c = #sbp.codec<sign, clip = 1.0>} { return }

// -----

// expected-error @+1 {{#sbp.codec<qsgd>: beta2 and eps are dgc's, topk's and topk2bit's under AdamW (0 < beta2 < 1, eps > 0), got beta2 = 9.900000e-01, eps = 1.000000e-08}}
func.func @f() attributes {c = #sbp.codec<qsgd, bits = 4, beta2 = 0.99, eps = 1.0e-8>} { return }

// -----

// expected-error @+1 {{#sbp.codec<dgc>: beta2 and eps are dgc's, topk's and topk2bit's under AdamW (0 < beta2 < 1, eps > 0), got beta2 = 1.000000e+00, eps = 1.000000e-08}}
func.func @f() attributes {c = #sbp.codec<dgc, density = 0.1, beta2 = 1.0, eps = 1.0e-8>} { return }

// -----

// expected-error @+1 {{#sbp.codec<dgc>: beta2 and eps are dgc's, topk's and topk2bit's under AdamW (0 < beta2 < 1, eps > 0), got beta2 = 9.900000e-01, eps = 0.000000e+00}}
func.func @f() attributes {c = #sbp.codec<dgc, density = 0.1, beta2 = 0.99>} { return }

// -----

// expected-error @+1 {{unknown codec parameter 'levels'}}
func.func @f() attributes {c = #sbp.codec<qsgd, levels = 3>} { return }

// -----

// Sign with a momentum keeps two state rows (residual and u), not one.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{keeps 2 state variable(s), got 1}}
  %b = sbp.all_reduce %g {codec = #sbp.codec<sign, momentum = 0.9>, dim = 0 : i64, state = [@r], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<8x8xf32, #sbp.t<@dp, [B]>>
  return
}

// -----

// A state row per rank of the gradient's placement.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<1x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{codec state @r must be f32 [2, 64] split S(0) on every dimension of the gradient's placement}}
  %b = sbp.all_reduce %g {codec = #sbp.codec<topk, density = 0.1>, dim = 0 : i64, state = [@r], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<8x8xf32, #sbp.t<@dp, [B]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<f32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{codec step @s must be an i32 scalar variable}}
  %b = sbp.all_reduce %g {codec = #sbp.codec<topk, density = 0.1>, dim = 0 : i64, state = [@r], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<8x8xf32, #sbp.t<@dp, [B]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xbf16, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{with a codec reduces an f32 gradient, got 'bf16'}}
  %b = sbp.all_reduce %g {codec = #sbp.codec<qsgd, bits = 4>, dim = 0 : i64, state = [], step = @s} : (tensor<8x8xbf16, #sbp.t<@dp, [P(sum)]>>) -> tensor<8x8xbf16, #sbp.t<@dp, [B]>>
  return
}

// -----

// Several gradients share a compressed all-reduce only under PowerSGD.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, %h: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{with a codec reduces one gradient (several only under powersgd), got 2}}
  %b:2 = sbp.all_reduce %g, %h {codec = #sbp.codec<topk, density = 0.1>, dim = 0 : i64, state = [@r, @r], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) -> (tensor<8x8xf32, #sbp.t<@dp, [B]>>, tensor<8x8xf32, #sbp.t<@dp, [B]>>)
  return
}

// -----

// PowerSGD over two matrices keeps both matrices' residual and Q, in turn:
// here the second's Q ([2, 4 x 2]) is missing.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @q : tensor<2x32xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @r2 : tensor<2x32xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, %h: tensor<16x2xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{keeps 4 state variable(s), got 3}}
  %b:2 = sbp.all_reduce %g, %h {codec = #sbp.codec<powersgd, rank = 4>, dim = 0 : i64, state = [@r, @q, @r2], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, tensor<16x2xf32, #sbp.t<@dp, [P(sum)]>>) -> (tensor<8x8xf32, #sbp.t<@dp, [B]>>, tensor<16x2xf32, #sbp.t<@dp, [B]>>)
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @q : tensor<2x32xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @r2 : tensor<2x32xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @q2 : tensor<2x32xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, %h: tensor<16x2xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{codec state @q2 must be f32 [2, 8] split S(0)}}
  %b:2 = sbp.all_reduce %g, %h {codec = #sbp.codec<powersgd, rank = 4>, dim = 0 : i64, state = [@r, @q, @r2, @q2], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, tensor<16x2xf32, #sbp.t<@dp, [P(sum)]>>) -> (tensor<8x8xf32, #sbp.t<@dp, [B]>>, tensor<16x2xf32, #sbp.t<@dp, [B]>>)
  return
}

// -----

// L-GreCo's rows of a PowerSGD all-reduce of two gradients: layer 1 and 2
// of 2 layers do not fit.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @r : tensor<2x64xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @q : tensor<2x16xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
sbp.variable @s : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @e : tensor<2x4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @c : tensor<2xi32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @p : tensor<2xi32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
sbp.variable @n : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
func.func @f(%g: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, %h: tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) {
  // expected-error @+1 {{L-GreCo needs 1 to 127 candidates, a default among them, 0 <= layer, layer + gradients <= layers and every >= 1}}
  %b:2 = sbp.all_reduce %g, %h {codec = #sbp.codec<powersgd, rank = 1>, dim = 0 : i64, lgreco = #sbp.lgreco<candidates = [1.0, 2.0], default_index = 0, layer = 1, layers = 2, every = 10>, lgreco_state = [@e, @c, @p, @n], state = [@r, @q, @r, @r, @q, @r], step = @s} : (tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>, tensor<8x8xf32, #sbp.t<@dp, [P(sum)]>>) -> (tensor<8x8xf32, #sbp.t<@dp, [B]>>, tensor<8x8xf32, #sbp.t<@dp, [B]>>)
  return
}

// IR that parses but means nothing, refused by the verifier at the offending
// op (issue 13, part 5): the compiler used to accept each of these and emit a
// plan that the runtime misreads or the loader refuses later.
// RUN: sbpflow-opt %s --split-input-file --verify-diagnostics

// An input is this step's batch: each rank reads its shard (split) or all of
// it (broadcast). Partial, it would be summed across ranks.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{'sbp.input' op input 'x' cannot be partial (P(sum)): a data field is split or broadcast}}
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@dp, [P(sum)]>>
  return
}

// -----

sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
func.func @f() {
  // expected-error @+1 {{'sbp.input' op input 'x' cannot be partial (P(max))}}
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@mesh, [S(0), P(max)]>>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{'sbp.input' op needs a non-empty field name}}
  %x = sbp.input "" : tensor<8xf32>
  return
}

// -----

// The plan holds f32 variables and i32 counters that start from zeros or an
// integral constant; a fill writes an f32 value.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
// expected-error @+1 {{'sbp.variable' op variable element type must be f32 or i32, got 'bf16'}}
sbp.variable @h : tensor<4xbf16, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 1

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
// expected-error @+1 {{'sbp.variable' op an i32 variable starts from zeros or an integral constant}}
sbp.variable @n : tensor<4xi32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, 0.0, 1.0> seed 1
sbp.variable @count : tensor<4xi32, #sbp.t<@dp, [B]>> init #sbp.init<constant, 3.0, 0.0> seed 1

// -----

func.func @f() {
  // expected-error @+1 {{'sbp.fill' op result #0 has type 'tensor<4xi32>' but the operands give 'tensor<4xf32>'}}
  %x = sbp.fill 1.0 : tensor<4xi32>
  return
}

// -----

// A split axis is an axis of the tensor: not negative, not on a scalar.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{split axis must be non-negative, got -1}}
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@dp, [#sbp.split<-1>]>>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{'sbp.input' op result #0 splits axis 0 of a rank-0 tensor}}
  %x = sbp.input "x" : tensor<f32, #sbp.t<@dp, [S(0)]>>
  return
}

// -----

// An op runs on one placement: a tensor changes placement only by a transfer.
sbp.placement @a cpu ranks [0, 1] hierarchy [2]
sbp.placement @b cpu ranks [2, 3] hierarchy [2]
func.func @f() {
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@a, [S(0)]>>
  // expected-error @+1 {{'sbp.relu' op result #0 is on placement @b but the op's other tensors are on @a: transfers between placements are not supported}}
  %y = sbp.relu %x : (tensor<8xf32, #sbp.t<@a, [S(0)]>>) -> tensor<8xf32, #sbp.t<@b, [S(0)]>>
  return
}

// -----

sbp.placement @a cpu ranks [0, 1] hierarchy [2]
sbp.placement @b cpu ranks [2, 3] hierarchy [2]
sbp.variable @w : tensor<4xf32, #sbp.t<@a, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 1
func.func @f() {
  %g = sbp.input "g" : tensor<4xf32, #sbp.t<@b, [B]>>
  // expected-error @+1 {{'sbp.sgd' op gradient is on placement @b but variable @w is on @a}}
  sbp.sgd %g {variable = @w, lr = 1.0e-1 : f32, momentum = 0.0 : f32, weight_decay = 0.0 : f32} : tensor<4xf32, #sbp.t<@b, [B]>>
  return
}

// -----

// A boxing op acts on a dimension of its placement's hierarchy.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  %x = sbp.input "x" : tensor<8xf32, #sbp.t<@dp, [S(0)]>>
  // expected-error @+1 {{'sbp.all_gather' op dim 1 is outside the hierarchy of 1 dimension(s)}}
  %y = sbp.all_gather %x {dim = 1 : i64} : (tensor<8xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32, #sbp.t<@dp, [B]>>
  return
}

// -----

// The driver reads metrics by name.
func.func @f() {
  %x = sbp.fill 1.0 : tensor<f32>
  // expected-error @+1 {{'sbp.metric' op needs a non-empty name}}
  sbp.metric "" %x : tensor<f32>
  return
}

// -----

// The driver reads metrics and outputs by name: a second one of a name would
// be shadowed.
func.func @f() {
  %x = sbp.fill 1.0 : tensor<f32>
  sbp.metric "loss" %x : tensor<f32>
  // expected-error @+1 {{'sbp.metric' op metric 'loss' declared twice in one function}}
  sbp.metric "loss" %x : tensor<f32>
  return
}

// -----

func.func @f() {
  %x = sbp.fill 1.0 : tensor<4xf32>
  sbp.output "probs" %x : tensor<4xf32>
  // expected-error @+1 {{'sbp.output' op output 'probs' declared twice in one function}}
  sbp.output "probs" %x : tensor<4xf32>
  return
}

// -----

// Initialisers a value can be drawn from.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
// expected-error @+1 {{uniform initialiser needs low < high, got [1.000000e+00, -1.000000e+00)}}
sbp.variable @w : tensor<4xf32> init #sbp.init<uniform, 1.0, -1.0> seed 1

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
// expected-error @+1 {{normal initialiser needs a standard deviation >= 0, got -2.000000e-02}}
sbp.variable @w : tensor<4xf32> init #sbp.init<normal, 0.0, -0.02> seed 1

// -----

// Optimiser settings an update can be made with.
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
sbp.variable @w : tensor<4xf32> init #sbp.init<zeros, 0.0, 0.0> seed 1
func.func @f() {
  %l = sbp.fill 1.0 : tensor<f32>
  // expected-error @+1 {{#sbp.sgd needs lr > 0, momentum >= 0 and weight_decay >= 0, got lr = -1.000000e-01, momentum = 0.000000e+00, weight_decay = 0.000000e+00}}
  sbp.minimize %l {optimizer = #sbp.sgd<lr = -0.1>} : tensor<f32>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  %l = sbp.fill 1.0 : tensor<f32>
  // expected-error @+1 {{#sbp.adamw needs lr > 0 and weight_decay >= 0, got lr = 1.000000e-01, weight_decay = -1.000000e+00}}
  sbp.minimize %l {optimizer = #sbp.adamw<lr = 0.1, weight_decay = -1.0>} : tensor<f32>
  return
}

// -----

sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @f() {
  // expected-error @+1 {{'sbp.fill' op cannot be partial (P(sum)): every rank writes the value}}
  %x = sbp.fill 1.0 : tensor<4xf32, #sbp.t<@dp, [P(sum)]>>
  return
}

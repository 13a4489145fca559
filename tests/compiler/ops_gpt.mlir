// The transformer ops of the sbp dialect: each parses, verifies (result
// shapes inferred from the operands or, where the operands do not fix them,
// checked against the result type) and prints back to a form that parses.
// RUN: sbpflow-opt %s --split-input-file | sbpflow-opt --split-input-file | FileCheck %s

// CHECK-LABEL: module @gpt
module @gpt {
  sbp.placement @tp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @wte : tensor<11x8xf32, #sbp.t<@tp, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @g : tensor<8xf32, #sbp.t<@tp, [B]>> init #sbp.init<constant, 1.0, 0.0> seed 2
  sbp.variable @b : tensor<8xf32, #sbp.t<@tp, [B]>> init #sbp.init<zeros> seed 3
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>
    %tg = sbp.input "targets" : tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>
    %wte = sbp.parameter @wte : tensor<11x8xf32, #sbp.t<@tp, [B]>>
    %g = sbp.parameter @g : tensor<8xf32, #sbp.t<@tp, [B]>>
    %b = sbp.parameter @b : tensor<8xf32, #sbp.t<@tp, [B]>>
    %e = sbp.embedding %wte, %ids : (tensor<11x8xf32, #sbp.t<@tp, [B]>>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x4x8xf32>
    %x = sbp.dropout %e {p = 0.25 : f32, seed = 7 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %n = sbp.layer_norm %x, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<8xf32, #sbp.t<@tp, [B]>>, tensor<8xf32, #sbp.t<@tp, [B]>>) -> tensor<2x4x8xf32>
    %qkv = sbp.matmul %n, %wte {transpose_b = true} : (tensor<2x4x8xf32>, tensor<11x8xf32, #sbp.t<@tp, [B]>>) -> tensor<2x4x11xf32>
    %q = sbp.narrow %qkv {axis = 2 : i64, begin = 3 : i64} : (tensor<2x4x11xf32>) -> tensor<2x4x8xf32>
    %a = sbp.causal_attention %q, %q, %n {heads = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %c = sbp.concat %a, %q, %n {axis = 1 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x12x8xf32>
    %t = sbp.transpose %c {perm = array<i64: 2, 0, 1>} : (tensor<2x12x8xf32>) -> tensor<8x2x12xf32>
    %r = sbp.reshape %t : (tensor<8x2x12xf32>) -> tensor<16x12xf32>
    %h = sbp.gelu %r : (tensor<16x12xf32>) -> tensor<16x12xf32>
    %s = sbp.softmax %h : (tensor<16x12xf32>) -> tensor<16x12xf32>
    %sq = sbp.square_sum %s : (tensor<16x12xf32>) -> tensor<f32>
    %k = sbp.clip_scale %sq {max_norm = 2.0 : f32} : (tensor<f32>) -> tensor<f32>
    %sg = sbp.softmax_grad %h, %s : (tensor<16x12xf32>, tensor<16x12xf32>) -> tensor<16x12xf32>
    %gg = sbp.gelu_grad %sg, %r : (tensor<16x12xf32>, tensor<16x12xf32>) -> tensor<16x12xf32>
    %pad = sbp.narrow_grad %q {axis = 2 : i64, begin = 3 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x11xf32>
    %dx, %dg, %db = sbp.layer_norm_grad %x, %x, %g {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<8xf32, #sbp.t<@tp, [B]>>) -> (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>)
    %dq, %dk, %dv = sbp.causal_attention_grad %a, %q, %q, %n {heads = 4 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
    %dw = sbp.embedding_grad %dx, %ids : (tensor<2x4x8xf32>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>) -> tensor<11x8xf32>
    %dwx = sbp.matmul %dq, %n {transpose_a = true} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<8x8xf32>
    %rows = sbp.reduce_rows %dk : (tensor<2x4x8xf32>) -> tensor<4x8xf32>
    %ba = sbp.bias_add %dv, %rows : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
    %l = sbp.softmax_xent %qkv, %tg : (tensor<2x4x11xf32>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x4xf32>
    %lg = sbp.softmax_xent_grad %qkv, %tg, %l : (tensor<2x4x11xf32>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>, tensor<2x4xf32>) -> tensor<2x4x11xf32>
    %cc = sbp.count_correct %qkv, %tg : (tensor<2x4x11xf32>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>) -> tensor<f32>
    %loss = sbp.mean %l : (tensor<2x4xf32>) -> tensor<f32>
    sbp.output "probs" %s : tensor<16x12xf32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.001, beta2 = 0.95, weight_decay = 0.1>, max_grad_norm = 1.0 : f32} : tensor<f32>
    return
  }
}
// CHECK: %[[IDS:.*]] = sbp.input "tokens"
// CHECK: sbp.embedding %{{.*}}, %[[IDS]] : (tensor<11x8xf32, #sbp.t<@tp, [B]>>, tensor<2x4xi32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x4x8xf32>
// CHECK: sbp.dropout %{{.*}} {p = 2.500000e-01 : f32, seed = 7 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK: sbp.layer_norm %{{.*}}, %{{.*}}, %{{.*}} {eps = 9.99999974E-6 : f32}
// CHECK: sbp.matmul %{{.*}}, %{{.*}} {transpose_b = true} : (tensor<2x4x8xf32>, tensor<11x8xf32, #sbp.t<@tp, [B]>>) -> tensor<2x4x11xf32>
// CHECK: sbp.narrow %{{.*}} {axis = 2 : i64, begin = 3 : i64} : (tensor<2x4x11xf32>) -> tensor<2x4x8xf32>
// CHECK: sbp.causal_attention %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64}
// CHECK: sbp.concat %{{.*}}, %{{.*}}, %{{.*}} {axis = 1 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x12x8xf32>
// CHECK: sbp.transpose %{{.*}} {perm = array<i64: 2, 0, 1>} : (tensor<2x12x8xf32>) -> tensor<8x2x12xf32>
// CHECK: sbp.reshape %{{.*}} : (tensor<8x2x12xf32>) -> tensor<16x12xf32>
// CHECK: sbp.gelu
// CHECK: sbp.softmax
// CHECK: sbp.square_sum %{{.*}} : (tensor<16x12xf32>) -> tensor<f32>
// CHECK: sbp.clip_scale %{{.*}} {max_norm = 2.000000e+00 : f32} : (tensor<f32>) -> tensor<f32>
// CHECK: sbp.softmax_grad
// CHECK: sbp.gelu_grad
// CHECK: sbp.narrow_grad %{{.*}} {axis = 2 : i64, begin = 3 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x11xf32>
// CHECK: %dx, %dgamma, %dbeta = sbp.layer_norm_grad {{.*}} -> (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>)
// CHECK: %dq, %dk, %dv = sbp.causal_attention_grad {{.*}} {heads = 4 : i64}
// CHECK: sbp.embedding_grad {{.*}} -> tensor<11x8xf32>
// CHECK: sbp.matmul %{{.*}}, %{{.*}} {transpose_a = true} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<8x8xf32>
// CHECK: sbp.reduce_rows %{{.*}} : (tensor<2x4x8xf32>) -> tensor<4x8xf32>
// CHECK: sbp.bias_add %{{.*}}, %{{.*}} : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
// CHECK: sbp.softmax_xent %{{.*}} -> tensor<2x4xf32>
// CHECK: sbp.softmax_xent_grad %{{.*}} -> tensor<2x4x11xf32>
// CHECK: sbp.count_correct %{{.*}} -> tensor<f32>
// CHECK: sbp.output "probs" %{{.*}} : tensor<16x12xf32>
// CHECK: sbp.minimize %{{.*}} {max_grad_norm = 1.000000e+00 : f32, optimizer = #sbp.adamw<lr = 1.000000e-03, beta1 = 9.000000e-01, beta2 = 0.9499{{[0-9]*}}, eps = 1.000000e-08, weight_decay = 1.000000e-01>} : tensor<f32>

// -----

// The optimiser ops with and without a gradient scale.
// CHECK-LABEL: module @optimizers
// CHECK: sbp.adamw %[[G:.*]], %[[S:.*]] {beta1 = {{.*}}, m = @w.m, step = @w.step, v = @w.v, variable = @w, weight_decay = 0.000000e+00 : f32} : tensor<4x3xf32>, tensor<f32>
// CHECK: sbp.adamw %[[G]] {{{.*}}} : tensor<4x3xf32>
// CHECK: sbp.sgd %[[G]], %[[S]] {lr = 1.000000e-01 : f32, momentum = 0.000000e+00 : f32, variable = @w, weight_decay = 0.000000e+00 : f32} : tensor<4x3xf32>, tensor<f32>
module @optimizers {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1
  sbp.variable @w.m : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
  sbp.variable @w.v : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
  sbp.variable @w.step : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
  func.func @train() {
    %g = sbp.input "g" : tensor<4x3xf32>
    %s = sbp.input "s" : tensor<f32>
    sbp.adamw %g, %s {variable = @w, m = @w.m, v = @w.v, step = @w.step, lr = 0.001 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4x3xf32>, tensor<f32>
    sbp.adamw %g {variable = @w, m = @w.m, v = @w.v, step = @w.step, lr = 0.001 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4x3xf32>
    sbp.sgd %g, %s {variable = @w, lr = 0.1 : f32, momentum = 0.0 : f32, weight_decay = 0.0 : f32} : tensor<4x3xf32>, tensor<f32>
    return
  }
}

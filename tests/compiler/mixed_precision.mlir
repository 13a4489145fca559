// sbp-mixed-precision: matmul and causal_attention run in bf16 (their float
// operands cast once, a parameter's cast shared by its readers); other ops
// run in their operands' element type, f32 where they differ (the residual
// add); a bias follows its input; layer_norm keeps gamma and beta f32; the
// loss, mean, metrics and outputs are f32. Variables stay f32.
// RUN: sbpflow-opt %s --split-input-file --sbp-mixed-precision | FileCheck %s
// With the whole pipeline: bf16 tensors in the plan (2 bytes an element),
// weight gradients produced in f32 and all-reduced in f32.
// RUN: sbpflow-opt %s --split-input-file --sbp-compile=bf16=true --sbp-emit-plan=print=true -o /dev/null | FileCheck %s --check-prefix=PLAN
// RUN: not sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-mixed-precision 2>&1 | FileCheck %s --check-prefix=AFTER

// CHECK-LABEL: module @linear
// CHECK: sbp.variable @w : tensor<4x3xf32
// CHECK: %[[X:.*]] = sbp.input "x" : tensor<8x4xf32
// CHECK-NEXT: %[[XB:.*]] = sbp.cast %[[X]] : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xbf16, #sbp.t<@dp, [S(0)]>>
// CHECK: %[[W:.*]] = sbp.parameter @w : tensor<4x3xf32
// CHECK-NEXT: %[[WB:.*]] = sbp.cast %[[W]] : {{.*}} -> tensor<4x3xbf16, #sbp.t<@dp, [B]>>
// CHECK: %[[B:.*]] = sbp.parameter @b
// CHECK-NEXT: %[[BB:.*]] = sbp.cast %[[B]] : {{.*}} -> tensor<3xbf16
// CHECK: %[[Z:.*]] = sbp.matmul %[[XB]], %[[WB]] : {{.*}} -> tensor<8x3xbf16>
// CHECK: %[[ZB:.*]] = sbp.bias_add %[[Z]], %[[BB]] : {{.*}} -> tensor<8x3xbf16>
// CHECK: %[[L:.*]] = sbp.softmax_xent %[[ZB]], %{{.*}} : (tensor<8x3xbf16>, {{.*}}) -> tensor<8xf32>
// CHECK: sbp.mean %[[L]] : (tensor<8xf32>) -> tensor<f32>

// PLAN-LABEL: plan version 6 of 'linear'
// PLAN: #0 w F32[4,3]
// PLAN: cast_1:0 BF16[8,4] placement 0 [S(0)] @{{[0-9]+}} (32 bytes)
// PLAN: matmul_7:0 BF16[8,3] placement 0 [S(0)] @{{[0-9]+}} (24 bytes)
// PLAN: reduce_rows_14:0 F32[3] placement 0 [P(sum)]
// PLAN: matmul_15:0 F32[4,3] placement 0 [P(sum)]
// PLAN: all_reduce_16:0 F32[3] placement 0 [B]
// PLAN: all_reduce_16:1 F32[4,3] placement 0 [B]
// PLAN: Cast (%0) -> (%1)
// PLAN: MatMul (%1, %13) -> (%15) queue Compute transpose_a
// PLAN: AllReduce (%14, %15) -> (%16, %17)

// AFTER: error: 'sbp.mean_grad' op has no mixed-precision rule; sbp-mixed-precision runs on the forward program, before sbp-autodiff
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

// CHECK-LABEL: module @block
// CHECK: %[[WQKV:.*]] = sbp.parameter @wqkv
// CHECK-NEXT: %[[WQKVB:.*]] = sbp.cast %[[WQKV]] : {{.*}} -> tensor<24x8xbf16
// CHECK: %[[HEAD:.*]] = sbp.parameter @head
// CHECK-NEXT: %[[HEADB:.*]] = sbp.cast %[[HEAD]] : {{.*}} -> tensor<11x8xbf16
// The embedding, the position bias and layer_norm stay f32.
// CHECK: %[[E:.*]] = sbp.embedding {{.*}} -> tensor<2x4x8xf32>
// CHECK: %[[X:.*]] = sbp.bias_add %[[E]], {{.*}} : (tensor<2x4x8xf32>, tensor<4x8xf32{{.*}}) -> tensor<2x4x8xf32>
// CHECK: %[[N:.*]] = sbp.layer_norm %[[X]], {{.*}} : (tensor<2x4x8xf32>, tensor<8xf32{{.*}}, tensor<8xf32{{.*}}) -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[NB:.*]] = sbp.cast %[[N]] : (tensor<2x4x8xf32>) -> tensor<2x4x8xbf16>
// CHECK-NEXT: %[[QKV:.*]] = sbp.matmul %[[NB]], %[[WQKVB]] {transpose_b = true} : {{.*}} -> tensor<2x4x24xbf16>
// CHECK-NEXT: %[[Q:.*]] = sbp.narrow %[[QKV]] {{.*}} -> tensor<2x4x8xbf16>
// CHECK: %[[A:.*]] = sbp.causal_attention {{.*}} -> tensor<2x4x8xbf16>
// CHECK-NEXT: %[[D:.*]] = sbp.dropout %[[A]] {{.*}} -> tensor<2x4x8xbf16>
// The residual add promotes to f32.
// CHECK-NEXT: %[[DF:.*]] = sbp.cast %[[D]] : (tensor<2x4x8xbf16>) -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[R:.*]] = sbp.add %[[X]], %[[DF]] : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[RB:.*]] = sbp.cast %[[R]] : (tensor<2x4x8xf32>) -> tensor<2x4x8xbf16>
// CHECK-NEXT: %[[LOGITS:.*]] = sbp.matmul %[[RB]], %[[HEADB]] {transpose_b = true} : {{.*}} -> tensor<2x4x11xbf16>
// CHECK-NEXT: %[[P:.*]] = sbp.softmax %[[LOGITS]] : (tensor<2x4x11xbf16>) -> tensor<2x4x11xbf16>
// CHECK-NEXT: %[[PF:.*]] = sbp.cast %[[P]] : (tensor<2x4x11xbf16>) -> tensor<2x4x11xf32>
// CHECK-NEXT: sbp.output "probs" %[[PF]] : tensor<2x4x11xf32>
// CHECK-NEXT: %[[L:.*]] = sbp.softmax_xent %[[LOGITS]], {{.*}} -> tensor<2x4xf32>
// CHECK-NEXT: %[[LOSS:.*]] = sbp.mean %[[L]]
// CHECK-NEXT: sbp.metric "loss" %[[LOSS]] : tensor<f32>
// CHECK-NOT: sbp.cast

// The backward: activation gradients in bf16 through attention; the weight
// gradients and the gradient entering the f32 residual stream are f32 matmul
// results (sbp-fold-casts); layer_norm's dgamma and dbeta are f32.
// PLAN-LABEL: plan version 6 of 'block'
// PLAN: matmul_{{[0-9]+}}:0 F32[11,8] placement 0 [B]
// PLAN: matmul_{{[0-9]+}}:0 F32[24,8] placement 0 [B]
// PLAN: CausalAttentionGrad
// PLAN-NOT: Cast
// PLAN: MatMul ({{.*}}) -> (%[[DX:[0-9]+]]) queue Compute
// PLAN-NEXT: MatMul ({{.*}}) -> ({{.*}}) queue Compute transpose_a
// PLAN-NEXT: LayerNormGrad (%[[DX]],
module @block {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @wte : tensor<11x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @wpe : tensor<4x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 2
  sbp.variable @ln.g : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<constant, 1.0, 0.0> seed 3
  sbp.variable @ln.b : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<zeros> seed 4
  sbp.variable @wqkv : tensor<24x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 5
  sbp.variable @head : tensor<11x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 6
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x4xi32, #sbp.t<@one, [B]>>
    %tgt = sbp.input "targets" : tensor<2x4xi32, #sbp.t<@one, [B]>>
    %wte = sbp.parameter @wte : tensor<11x8xf32, #sbp.t<@one, [B]>>
    %wpe = sbp.parameter @wpe : tensor<4x8xf32, #sbp.t<@one, [B]>>
    %g = sbp.parameter @ln.g : tensor<8xf32, #sbp.t<@one, [B]>>
    %b = sbp.parameter @ln.b : tensor<8xf32, #sbp.t<@one, [B]>>
    %wqkv = sbp.parameter @wqkv : tensor<24x8xf32, #sbp.t<@one, [B]>>
    %head = sbp.parameter @head : tensor<11x8xf32, #sbp.t<@one, [B]>>
    %e = sbp.embedding %wte, %ids : (tensor<11x8xf32, #sbp.t<@one, [B]>>, tensor<2x4xi32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %x = sbp.bias_add %e, %wpe : (tensor<2x4x8xf32>, tensor<4x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %n = sbp.layer_norm %x, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<8xf32, #sbp.t<@one, [B]>>, tensor<8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %qkv = sbp.matmul %n, %wqkv {transpose_b = true} : (tensor<2x4x8xf32>, tensor<24x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x24xf32>
    %q = sbp.narrow %qkv {axis = 2 : i64, begin = 0 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %k = sbp.narrow %qkv {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %v = sbp.narrow %qkv {axis = 2 : i64, begin = 16 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %a = sbp.causal_attention %q, %k, %v {heads = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %d = sbp.dropout %a {p = 0.1 : f32, seed = 3 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %r = sbp.add %x, %d : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %logits = sbp.matmul %r, %head {transpose_b = true} : (tensor<2x4x8xf32>, tensor<11x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x11xf32>
    %p = sbp.softmax %logits : (tensor<2x4x11xf32>) -> tensor<2x4x11xf32>
    sbp.output "probs" %p : tensor<2x4x11xf32>
    %l = sbp.softmax_xent %logits, %tgt : (tensor<2x4x11xf32>, tensor<2x4xi32, #sbp.t<@one, [B]>>) -> tensor<2x4xf32>
    %loss = sbp.mean %l : (tensor<2x4xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// sbp-emit-plan of the transformer ops: every kind with its attributes,
// AdamW with its slot variables and the clipping scale, SGD with a scale,
// and Program.outputs from sbp.output. One rank, so that the plan does not
// depend on the SBPs propagation chooses.
// RUN: sbpflow-opt %s --split-input-file --sbp-compile --sbp-emit-plan=print=true -o /dev/null | FileCheck %s

// CHECK: plan version 6 of 'gpt'
// CHECK: variables:
// CHECK-NEXT: #0 wte F32[11,8] placement 0 [B] init Normal(0, 0.02, seed 1)
// CHECK-NEXT: #1 wte.adam_m F32[11,8] placement 0 [B] init Zeros
// CHECK-NEXT: #2 wte.adam_v F32[11,8] placement 0 [B] init Zeros
// CHECK-NEXT: #3 wte.adam_step I32[] placement 0 [B] init Zeros
// CHECK-NEXT: #4 ln.g F32[8] placement 0 [B] init Constant(1, 0, seed 2)
// CHECK: program train
// CHECK: Embedding (%[[WTE:[0-9]+]], %[[IDS:[0-9]+]]) -> (%[[E:[0-9]+]]) queue Compute{{$}}
// CHECK: Dropout (%[[E]]) -> (%[[D:[0-9]+]]) queue Compute p 0.25 seed 7{{$}}
// CHECK: LayerNorm (%[[D]], %{{[0-9]+}}, %{{[0-9]+}}) -> (%{{[0-9]+}}) queue Compute eps 1e-05{{$}}
// CHECK: MatMul ({{.*}}) -> (%[[QKV:[0-9]+]]) queue Compute transpose_b{{$}}
// CHECK: Narrow (%[[QKV]]) -> (%[[Q:[0-9]+]]) queue Compute axis 2 begin 0{{$}}
// CHECK: Narrow (%[[QKV]]) -> (%[[K:[0-9]+]]) queue Compute axis 2 begin 8{{$}}
// CHECK: Narrow (%[[QKV]]) -> (%[[V:[0-9]+]]) queue Compute axis 2 begin 16{{$}}
// CHECK: CausalAttention (%[[Q]], %[[K]], %[[V]]) -> (%[[A:[0-9]+]]) queue Compute heads 2{{$}}
// CHECK: Concat (%[[A]], %[[Q]]) -> (%{{[0-9]+}}) queue Compute axis 2{{$}}
// CHECK: Transpose ({{.*}}) queue Compute perm [1,0,2]{{$}}
// CHECK: Reshape ({{.*}}) queue Compute{{$}}
// CHECK: Gelu ({{.*}}) queue Compute{{$}}
// CHECK: Softmax ({{.*}}) queue Compute{{$}}
// CHECK: Softmax ({{.*}}) -> (%[[PROBS:[0-9]+]]) queue Compute{{$}}
// CHECK: SoftmaxGrad ({{.*}}) queue Compute{{$}}
// CHECK: GeluGrad ({{.*}}) queue Compute{{$}}
// CHECK: CausalAttentionGrad ({{.*}}, %[[Q]], %[[K]], %[[V]]) -> (%{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}) queue Compute heads 2{{$}}
// CHECK: NarrowGrad ({{.*}}) queue Compute axis 2 begin 16{{$}}
// CHECK: LayerNormGrad ({{.*}}) -> (%[[DX:[0-9]+]], %{{[0-9]+}}, %{{[0-9]+}}) queue Compute eps 1e-05{{$}}
// The dropout gradient is the same mask on dy.
// CHECK: Dropout (%[[DX]]) -> (%[[DD:[0-9]+]]) queue Compute p 0.25 seed 7{{$}}
// CHECK: EmbeddingGrad (%[[DD]], %[[IDS]]) -> ({{.*}}) queue Compute{{$}}
// CHECK: SquareSum ({{.*}}) -> (%{{[0-9]+}}) queue Compute{{$}}
// CHECK: ClipScale (%{{[0-9]+}}) -> (%[[SCALE:[0-9]+]]) queue Compute max_norm 0.5{{$}}
// CHECK: AdamW (%{{[0-9]+}}, %[[SCALE]]) -> () queue Compute lr 0.001 beta1 0.9 beta2 0.999 eps 1e-08 weight_decay 0 variable #4 m #5 v #6 step #7{{$}}
// CHECK: AdamW (%{{[0-9]+}}, %[[SCALE]]) -> () queue Compute lr 0.001 beta1 0.9 beta2 0.999 eps 1e-08 weight_decay 0.1 variable #0 m #1 v #2 step #3{{$}}
// CHECK: registers:
// CHECK: output probs <- %[[PROBS]]
// CHECK-NEXT: metric loss
module @gpt {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @wte : tensor<11x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @ln.g : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<constant, 1.0, 0.0> seed 2
  sbp.variable @ln.b : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<zeros> seed 3
  sbp.variable @wqkv : tensor<24x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 4
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x4xi32, #sbp.t<@one, [B]>>
    %tg = sbp.input "targets" : tensor<2x4xi32, #sbp.t<@one, [B]>>
    %wte = sbp.parameter @wte : tensor<11x8xf32, #sbp.t<@one, [B]>>
    %g = sbp.parameter @ln.g : tensor<8xf32, #sbp.t<@one, [B]>>
    %b = sbp.parameter @ln.b : tensor<8xf32, #sbp.t<@one, [B]>>
    %wqkv = sbp.parameter @wqkv : tensor<24x8xf32, #sbp.t<@one, [B]>>
    %e = sbp.embedding %wte, %ids : (tensor<11x8xf32, #sbp.t<@one, [B]>>, tensor<2x4xi32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %d = sbp.dropout %e {p = 0.25 : f32, seed = 7 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %n = sbp.layer_norm %d, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<8xf32, #sbp.t<@one, [B]>>, tensor<8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %qkv = sbp.matmul %n, %wqkv {transpose_b = true} : (tensor<2x4x8xf32>, tensor<24x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x24xf32>
    %q = sbp.narrow %qkv {axis = 2 : i64, begin = 0 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %k = sbp.narrow %qkv {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %v = sbp.narrow %qkv {axis = 2 : i64, begin = 16 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %a = sbp.causal_attention %q, %k, %v {heads = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %c = sbp.concat %a, %q {axis = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x16xf32>
    %t = sbp.transpose %c {perm = array<i64: 1, 0, 2>} : (tensor<2x4x16xf32>) -> tensor<4x2x16xf32>
    %r = sbp.reshape %t : (tensor<4x2x16xf32>) -> tensor<8x16xf32>
    %h = sbp.gelu %r : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %s = sbp.softmax %h : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %r2 = sbp.reshape %s : (tensor<8x16xf32>) -> tensor<2x4x16xf32>
    %x = sbp.narrow %r2 {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x16xf32>) -> tensor<2x4x8xf32>
    %logits = sbp.matmul %x, %wte {transpose_b = true} : (tensor<2x4x8xf32>, tensor<11x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x11xf32>
    %p = sbp.softmax %logits : (tensor<2x4x11xf32>) -> tensor<2x4x11xf32>
    sbp.output "probs" %p : tensor<2x4x11xf32>
    %l = sbp.softmax_xent %logits, %tg : (tensor<2x4x11xf32>, tensor<2x4xi32, #sbp.t<@one, [B]>>) -> tensor<2x4xf32>
    %loss = sbp.mean %l : (tensor<2x4xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.001, weight_decay = 0.1>, max_grad_norm = 0.5 : f32} : tensor<f32>
    return
  }
}

// -----

// SGD with clipping: the scale is SgdMomentum's second input.
// CHECK: plan version 6 of 'sgd'
// CHECK: ClipScale (%{{[0-9]+}}) -> (%[[S:[0-9]+]]) queue Compute max_norm 1{{$}}
// CHECK: SgdMomentum (%{{[0-9]+}}, %[[S]]) -> () queue Compute lr 0.1 momentum 0 weight_decay 0 variable #0{{$}}
module @sgd {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@one, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@one, [B]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@one, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@one, [B]>>, tensor<4x3xf32, #sbp.t<@one, [B]>>) -> tensor<8x3xf32>
    %loss = sbp.mean %z : (tensor<8x3xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1>, max_grad_norm = 1.0 : f32} : tensor<f32>
    return
  }
}

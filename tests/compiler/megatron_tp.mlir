// Megatron tensor parallelism from weight annotations alone: only the
// column-parallel weights ([out, in], S(0) on the tp dimension) and the
// row-parallel ones (S(1)) are annotated; biases, layer norms, embeddings and
// the head are left to sbp-propagate. Per block (attention, MLP) there is one
// all_reduce on the tp dimension in forward and one in backward, both on
// activations; column-parallel biases become S(0); no weight is gathered.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing | FileCheck %s --implicit-check-not=sbp.all_gather --implicit-check-not=sbp.reduce_scatter --implicit-check-not=sbp.all_to_all

// An MLP block between an unannotated input layer and head, on tp = 2. The
// backward all-reduce could as well sum the input layer's weight gradients
// (in the gradient bucket) instead of the activation gradient; here the
// activation gradient (16x32) is the smaller, so it is the one reduced.
// CHECK-LABEL: module @mlp_tp
// CHECK: sbp.variable @fc1.bias : tensor<128xf32, #sbp.t<@tp, [S(0)]>>
// CHECK-NEXT: sbp.variable @fc1.bias.momentum : tensor<128xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @fc2.bias : tensor<32xf32, #sbp.t<@tp, [B]>>
// Forward: column-parallel fc1 with its bias split alike, row-parallel fc2,
// one all_reduce of its partial sums.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.matmul {{.*}} -> tensor<16x128xf32, #sbp.t<@tp, [S(1)]>>
// CHECK-NEXT: sbp.bias_add %{{.*}}, %{{.*}} : (tensor<16x128xf32, #sbp.t<@tp, [S(1)]>>, tensor<128xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<16x128xf32, #sbp.t<@tp, [S(1)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[Y:.*]] = sbp.matmul {{.*}} -> tensor<16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NEXT: sbp.all_reduce %[[Y]] {dim = 0 : i64} : (tensor<16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.metric "loss"
// Backward: one all_reduce, of the activation gradient leaving fc1.
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[DX:.*]] = sbp.matmul {{.*}} -> tensor<16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.all_reduce %[[DX]] {dim = 0 : i64} : (tensor<16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.sgd {{.*}}variable = @fc1.bias{{.*}} : tensor<128xf32, #sbp.t<@tp, [S(0)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: return
module @mlp_tp {
  sbp.placement @tp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @in.weight : tensor<32x32xf32> init #sbp.init<uniform, -0.09, 0.09> seed 1
  sbp.variable @in.bias : tensor<32xf32> init #sbp.init<zeros> seed 2
  sbp.variable @fc1.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<uniform, -0.17, 0.17> seed 3
  sbp.variable @fc1.bias : tensor<128xf32> init #sbp.init<zeros> seed 4
  sbp.variable @fc2.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>> init #sbp.init<uniform, -0.09, 0.09> seed 5
  sbp.variable @fc2.bias : tensor<32xf32> init #sbp.init<zeros> seed 6
  sbp.variable @head.weight : tensor<10x32xf32> init #sbp.init<uniform, -0.17, 0.17> seed 7
  func.func @train() {
    %x = sbp.input "x" : tensor<16x32xf32, #sbp.t<@tp, [B]>>
    %y = sbp.input "y" : tensor<16xi32, #sbp.t<@tp, [B]>>
    %win = sbp.parameter @in.weight : tensor<32x32xf32>
    %bin = sbp.parameter @in.bias : tensor<32xf32>
    %w1 = sbp.parameter @fc1.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>
    %b1 = sbp.parameter @fc1.bias : tensor<128xf32>
    %w2 = sbp.parameter @fc2.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>
    %b2 = sbp.parameter @fc2.bias : tensor<32xf32>
    %wh = sbp.parameter @head.weight : tensor<10x32xf32>
    %i = sbp.matmul %x, %win {transpose_b = true} : (tensor<16x32xf32, #sbp.t<@tp, [B]>>, tensor<32x32xf32>) -> tensor<16x32xf32>
    %ib = sbp.bias_add %i, %bin : (tensor<16x32xf32>, tensor<32xf32>) -> tensor<16x32xf32>
    %h0 = sbp.relu %ib : (tensor<16x32xf32>) -> tensor<16x32xf32>
    %h1 = sbp.matmul %h0, %w1 {transpose_b = true} : (tensor<16x32xf32>, tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<16x128xf32>
    %h1b = sbp.bias_add %h1, %b1 : (tensor<16x128xf32>, tensor<128xf32>) -> tensor<16x128xf32>
    %a = sbp.relu %h1b : (tensor<16x128xf32>) -> tensor<16x128xf32>
    %h2 = sbp.matmul %a, %w2 {transpose_b = true} : (tensor<16x128xf32>, tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>) -> tensor<16x32xf32>
    %h2b = sbp.bias_add %h2, %b2 : (tensor<16x32xf32>, tensor<32xf32>) -> tensor<16x32xf32>
    %r = sbp.add %h0, %h2b : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
    %logits = sbp.matmul %r, %wh {transpose_b = true} : (tensor<16x32xf32>, tensor<10x32xf32>) -> tensor<16x10xf32>
    %l = sbp.softmax_xent %logits, %y : (tensor<16x10xf32>, tensor<16xi32, #sbp.t<@tp, [B]>>) -> tensor<16xf32>
    %loss = sbp.mean %l : (tensor<16xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// The same on a [dp, tp] = [2, 2] mesh with the batch split on dp: the tp
// collectives act on dim 1, and every gradient is all-reduced on dim 0 only.
// CHECK-LABEL: module @mlp_dp_tp
// CHECK: sbp.variable @fc1.bias : tensor<128xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[Y:.*]] = sbp.matmul {{.*}} -> tensor<16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NEXT: sbp.all_reduce %[[Y]] {dim = 1 : i64} : (tensor<16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.metric "loss"
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[DX:.*]] = sbp.matmul {{.*}} -> tensor<16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.all_reduce %[[DX]] {dim = 1 : i64} : (tensor<16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-COUNT-7: sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<{{.*}}, #sbp.t<@mesh, [P(sum), {{B|S\(0\)|S\(1\)}}]>>) -> tensor<{{.*}}, #sbp.t<@mesh, [B, {{B|S\(0\)|S\(1\)}}]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: return
module @mlp_dp_tp {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @in.weight : tensor<32x32xf32> init #sbp.init<uniform, -0.09, 0.09> seed 1
  sbp.variable @in.bias : tensor<32xf32> init #sbp.init<zeros> seed 2
  sbp.variable @fc1.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<uniform, -0.17, 0.17> seed 3
  sbp.variable @fc1.bias : tensor<128xf32> init #sbp.init<zeros> seed 4
  sbp.variable @fc2.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<uniform, -0.09, 0.09> seed 5
  sbp.variable @fc2.bias : tensor<32xf32> init #sbp.init<zeros> seed 6
  sbp.variable @head.weight : tensor<10x32xf32> init #sbp.init<uniform, -0.17, 0.17> seed 7
  func.func @train() {
    %x = sbp.input "x" : tensor<16x32xf32, #sbp.t<@mesh, [S(0), B]>>
    %y = sbp.input "y" : tensor<16xi32, #sbp.t<@mesh, [S(0), B]>>
    %win = sbp.parameter @in.weight : tensor<32x32xf32>
    %bin = sbp.parameter @in.bias : tensor<32xf32>
    %w1 = sbp.parameter @fc1.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %b1 = sbp.parameter @fc1.bias : tensor<128xf32>
    %w2 = sbp.parameter @fc2.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>
    %b2 = sbp.parameter @fc2.bias : tensor<32xf32>
    %wh = sbp.parameter @head.weight : tensor<10x32xf32>
    %i = sbp.matmul %x, %win {transpose_b = true} : (tensor<16x32xf32, #sbp.t<@mesh, [S(0), B]>>, tensor<32x32xf32>) -> tensor<16x32xf32>
    %ib = sbp.bias_add %i, %bin : (tensor<16x32xf32>, tensor<32xf32>) -> tensor<16x32xf32>
    %h0 = sbp.relu %ib : (tensor<16x32xf32>) -> tensor<16x32xf32>
    %h1 = sbp.matmul %h0, %w1 {transpose_b = true} : (tensor<16x32xf32>, tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<16x128xf32>
    %h1b = sbp.bias_add %h1, %b1 : (tensor<16x128xf32>, tensor<128xf32>) -> tensor<16x128xf32>
    %a = sbp.relu %h1b : (tensor<16x128xf32>) -> tensor<16x128xf32>
    %h2 = sbp.matmul %a, %w2 {transpose_b = true} : (tensor<16x128xf32>, tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<16x32xf32>
    %h2b = sbp.bias_add %h2, %b2 : (tensor<16x32xf32>, tensor<32xf32>) -> tensor<16x32xf32>
    %r = sbp.add %h0, %h2b : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
    %logits = sbp.matmul %r, %wh {transpose_b = true} : (tensor<16x32xf32>, tensor<10x32xf32>) -> tensor<16x10xf32>
    %l = sbp.softmax_xent %logits, %y : (tensor<16x10xf32>, tensor<16xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<16xf32>
    %loss = sbp.mean %l : (tensor<16xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// A two-block GPT (pre-LayerNorm, q/k/v column-parallel, causal attention with
// 4 heads on tp = 2, row-parallel projections, residual adds, GELU MLP,
// dropout) with only the linear weights annotated.
// CHECK-LABEL: module @gpt_tp
// Column-parallel biases S(0) (and their momentum), the others broadcast.
// CHECK: sbp.variable @h0.attn.q.bias : tensor<32xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h0.attn.q.bias.momentum : tensor<32xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h0.attn.k.bias : tensor<32xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h0.attn.v.bias : tensor<32xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h0.attn.c_proj.bias : tensor<32xf32, #sbp.t<@tp, [B]>>
// CHECK: sbp.variable @h0.mlp.fc.bias : tensor<128xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h0.mlp.proj.bias : tensor<32xf32, #sbp.t<@tp, [B]>>
// CHECK: sbp.variable @h1.attn.q.bias : tensor<32xf32, #sbp.t<@tp, [S(0)]>>
// CHECK: sbp.variable @h1.mlp.fc.bias : tensor<128xf32, #sbp.t<@tp, [S(0)]>>
// Block 0, attention: head-parallel, one all_reduce after the projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.causal_attention {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[A0:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NEXT: %[[R0:.*]] = sbp.all_reduce %[[A0]] {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.bias_add %[[R0]]
// Block 0, MLP: one all_reduce after the row-parallel projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.gelu {{.*}} -> tensor<2x16x128xf32, #sbp.t<@tp, [S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[M0:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NEXT: %[[N0:.*]] = sbp.all_reduce %[[M0]] {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.bias_add %[[N0]]
// Block 1, attention: head-parallel, one all_reduce after the projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.causal_attention {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[A1:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NEXT: %[[R1:.*]] = sbp.all_reduce %[[A1]] {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.bias_add %[[R1]]
// Block 1, MLP: one all_reduce after the row-parallel projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.gelu {{.*}} -> tensor<2x16x128xf32, #sbp.t<@tp, [S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[M1:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>
// CHECK-NEXT: %[[N1:.*]] = sbp.all_reduce %[[M1]] {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.bias_add %[[N1]]
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.metric "loss"
// Backward: per block and sub-block one all_reduce, of the activation
// gradient that enters the layer norm in front of it.
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G0:.*]] = sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G0]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G1:.*]] = sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G1]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G2:.*]] = sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G2]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G3:.*]] = sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<2x16x32xf32, #sbp.t<@tp, [P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@tp, [B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G3]]
// CHECK-NOT: sbp.all_reduce
// CHECK: return
module @gpt_tp {
  sbp.placement @tp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @wte : tensor<24x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @wpe : tensor<16x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 2
  sbp.variable @h0.ln_1.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 3
  sbp.variable @h0.ln_1.bias : tensor<32xf32> init #sbp.init<zeros> seed 4
  sbp.variable @h0.attn.q.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 5
  sbp.variable @h0.attn.q.bias : tensor<32xf32> init #sbp.init<zeros> seed 6
  sbp.variable @h0.attn.k.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 7
  sbp.variable @h0.attn.k.bias : tensor<32xf32> init #sbp.init<zeros> seed 8
  sbp.variable @h0.attn.v.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 9
  sbp.variable @h0.attn.v.bias : tensor<32xf32> init #sbp.init<zeros> seed 10
  sbp.variable @h0.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@tp, [S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 11
  sbp.variable @h0.attn.c_proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 12
  sbp.variable @h0.ln_2.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 13
  sbp.variable @h0.ln_2.bias : tensor<32xf32> init #sbp.init<zeros> seed 14
  sbp.variable @h0.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 15
  sbp.variable @h0.mlp.fc.bias : tensor<128xf32> init #sbp.init<zeros> seed 16
  sbp.variable @h0.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 17
  sbp.variable @h0.mlp.proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 18
  sbp.variable @h1.ln_1.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 19
  sbp.variable @h1.ln_1.bias : tensor<32xf32> init #sbp.init<zeros> seed 20
  sbp.variable @h1.attn.q.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 21
  sbp.variable @h1.attn.q.bias : tensor<32xf32> init #sbp.init<zeros> seed 22
  sbp.variable @h1.attn.k.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 23
  sbp.variable @h1.attn.k.bias : tensor<32xf32> init #sbp.init<zeros> seed 24
  sbp.variable @h1.attn.v.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 25
  sbp.variable @h1.attn.v.bias : tensor<32xf32> init #sbp.init<zeros> seed 26
  sbp.variable @h1.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@tp, [S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 27
  sbp.variable @h1.attn.c_proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 28
  sbp.variable @h1.ln_2.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 29
  sbp.variable @h1.ln_2.bias : tensor<32xf32> init #sbp.init<zeros> seed 30
  sbp.variable @h1.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 31
  sbp.variable @h1.mlp.fc.bias : tensor<128xf32> init #sbp.init<zeros> seed 32
  sbp.variable @h1.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 33
  sbp.variable @h1.mlp.proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 34
  sbp.variable @ln_f.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 35
  sbp.variable @ln_f.bias : tensor<32xf32> init #sbp.init<zeros> seed 36
  sbp.variable @lm_head.weight : tensor<24x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 37
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x16xi32, #sbp.t<@tp, [B]>>
    %targets = sbp.input "targets" : tensor<2x16xi32, #sbp.t<@tp, [B]>>
    %wte = sbp.parameter @wte : tensor<24x32xf32>
    %wpe = sbp.parameter @wpe : tensor<16x32xf32>
    %h0_ln_1_weight = sbp.parameter @h0.ln_1.weight : tensor<32xf32>
    %h0_ln_1_bias = sbp.parameter @h0.ln_1.bias : tensor<32xf32>
    %h0_attn_q_weight = sbp.parameter @h0.attn.q.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h0_attn_q_bias = sbp.parameter @h0.attn.q.bias : tensor<32xf32>
    %h0_attn_k_weight = sbp.parameter @h0.attn.k.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h0_attn_k_bias = sbp.parameter @h0.attn.k.bias : tensor<32xf32>
    %h0_attn_v_weight = sbp.parameter @h0.attn.v.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h0_attn_v_bias = sbp.parameter @h0.attn.v.bias : tensor<32xf32>
    %h0_attn_c_proj_weight = sbp.parameter @h0.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@tp, [S(1)]>>
    %h0_attn_c_proj_bias = sbp.parameter @h0.attn.c_proj.bias : tensor<32xf32>
    %h0_ln_2_weight = sbp.parameter @h0.ln_2.weight : tensor<32xf32>
    %h0_ln_2_bias = sbp.parameter @h0.ln_2.bias : tensor<32xf32>
    %h0_mlp_fc_weight = sbp.parameter @h0.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>
    %h0_mlp_fc_bias = sbp.parameter @h0.mlp.fc.bias : tensor<128xf32>
    %h0_mlp_proj_weight = sbp.parameter @h0.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>
    %h0_mlp_proj_bias = sbp.parameter @h0.mlp.proj.bias : tensor<32xf32>
    %h1_ln_1_weight = sbp.parameter @h1.ln_1.weight : tensor<32xf32>
    %h1_ln_1_bias = sbp.parameter @h1.ln_1.bias : tensor<32xf32>
    %h1_attn_q_weight = sbp.parameter @h1.attn.q.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h1_attn_q_bias = sbp.parameter @h1.attn.q.bias : tensor<32xf32>
    %h1_attn_k_weight = sbp.parameter @h1.attn.k.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h1_attn_k_bias = sbp.parameter @h1.attn.k.bias : tensor<32xf32>
    %h1_attn_v_weight = sbp.parameter @h1.attn.v.weight : tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>
    %h1_attn_v_bias = sbp.parameter @h1.attn.v.bias : tensor<32xf32>
    %h1_attn_c_proj_weight = sbp.parameter @h1.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@tp, [S(1)]>>
    %h1_attn_c_proj_bias = sbp.parameter @h1.attn.c_proj.bias : tensor<32xf32>
    %h1_ln_2_weight = sbp.parameter @h1.ln_2.weight : tensor<32xf32>
    %h1_ln_2_bias = sbp.parameter @h1.ln_2.bias : tensor<32xf32>
    %h1_mlp_fc_weight = sbp.parameter @h1.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>
    %h1_mlp_fc_bias = sbp.parameter @h1.mlp.fc.bias : tensor<128xf32>
    %h1_mlp_proj_weight = sbp.parameter @h1.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>
    %h1_mlp_proj_bias = sbp.parameter @h1.mlp.proj.bias : tensor<32xf32>
    %ln_f_weight = sbp.parameter @ln_f.weight : tensor<32xf32>
    %ln_f_bias = sbp.parameter @ln_f.bias : tensor<32xf32>
    %lm_head_weight = sbp.parameter @lm_head.weight : tensor<24x32xf32>
    %tok = sbp.embedding %wte, %ids : (tensor<24x32xf32>, tensor<2x16xi32, #sbp.t<@tp, [B]>>) -> tensor<2x16x32xf32>
    %emb = sbp.bias_add %tok, %wpe : (tensor<2x16x32xf32>, tensor<16x32xf32>) -> tensor<2x16x32xf32>
    %x = sbp.dropout %emb {p = 0.2 : f32, seed = 1 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_n1 = sbp.layer_norm %x, %h0_ln_1_weight, %h0_ln_1_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_q_mm = sbp.matmul %h0_n1, %h0_attn_q_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h0_q = sbp.bias_add %h0_q_mm, %h0_attn_q_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_k_mm = sbp.matmul %h0_n1, %h0_attn_k_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h0_k = sbp.bias_add %h0_k_mm, %h0_attn_k_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_v_mm = sbp.matmul %h0_n1, %h0_attn_v_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h0_v = sbp.bias_add %h0_v_mm, %h0_attn_v_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_att = sbp.causal_attention %h0_q, %h0_k, %h0_v {heads = 4 : i64} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_proj_mm = sbp.matmul %h0_att, %h0_attn_c_proj_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(1)]>>) -> tensor<2x16x32xf32>
    %h0_proj = sbp.bias_add %h0_proj_mm, %h0_attn_c_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_proj_drop = sbp.dropout %h0_proj {p = 0.2 : f32, seed = 2 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_x1 = sbp.add %x, %h0_proj_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_n2 = sbp.layer_norm %h0_x1, %h0_ln_2_weight, %h0_ln_2_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_fc_mm = sbp.matmul %h0_n2, %h0_mlp_fc_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x128xf32>
    %h0_fc = sbp.bias_add %h0_fc_mm, %h0_mlp_fc_bias : (tensor<2x16x128xf32>, tensor<128xf32>) -> tensor<2x16x128xf32>
    %h0_gelu = sbp.gelu %h0_fc : (tensor<2x16x128xf32>) -> tensor<2x16x128xf32>
    %h0_mlp_mm = sbp.matmul %h0_gelu, %h0_mlp_proj_weight {transpose_b = true} : (tensor<2x16x128xf32>, tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>) -> tensor<2x16x32xf32>
    %h0_mlp = sbp.bias_add %h0_mlp_mm, %h0_mlp_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_mlp_drop = sbp.dropout %h0_mlp {p = 0.2 : f32, seed = 3 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_x2 = sbp.add %h0_x1, %h0_mlp_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_n1 = sbp.layer_norm %h0_x2, %h1_ln_1_weight, %h1_ln_1_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_q_mm = sbp.matmul %h1_n1, %h1_attn_q_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h1_q = sbp.bias_add %h1_q_mm, %h1_attn_q_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_k_mm = sbp.matmul %h1_n1, %h1_attn_k_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h1_k = sbp.bias_add %h1_k_mm, %h1_attn_k_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_v_mm = sbp.matmul %h1_n1, %h1_attn_v_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x32xf32>
    %h1_v = sbp.bias_add %h1_v_mm, %h1_attn_v_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_att = sbp.causal_attention %h1_q, %h1_k, %h1_v {heads = 4 : i64} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_proj_mm = sbp.matmul %h1_att, %h1_attn_c_proj_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@tp, [S(1)]>>) -> tensor<2x16x32xf32>
    %h1_proj = sbp.bias_add %h1_proj_mm, %h1_attn_c_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_proj_drop = sbp.dropout %h1_proj {p = 0.2 : f32, seed = 12 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_x1 = sbp.add %h0_x2, %h1_proj_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_n2 = sbp.layer_norm %h1_x1, %h1_ln_2_weight, %h1_ln_2_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_fc_mm = sbp.matmul %h1_n2, %h1_mlp_fc_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<128x32xf32, #sbp.t<@tp, [S(0)]>>) -> tensor<2x16x128xf32>
    %h1_fc = sbp.bias_add %h1_fc_mm, %h1_mlp_fc_bias : (tensor<2x16x128xf32>, tensor<128xf32>) -> tensor<2x16x128xf32>
    %h1_gelu = sbp.gelu %h1_fc : (tensor<2x16x128xf32>) -> tensor<2x16x128xf32>
    %h1_mlp_mm = sbp.matmul %h1_gelu, %h1_mlp_proj_weight {transpose_b = true} : (tensor<2x16x128xf32>, tensor<32x128xf32, #sbp.t<@tp, [S(1)]>>) -> tensor<2x16x32xf32>
    %h1_mlp = sbp.bias_add %h1_mlp_mm, %h1_mlp_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_mlp_drop = sbp.dropout %h1_mlp {p = 0.2 : f32, seed = 13 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_x2 = sbp.add %h1_x1, %h1_mlp_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %xf = sbp.layer_norm %h1_x2, %ln_f_weight, %ln_f_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %logits = sbp.matmul %xf, %lm_head_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<24x32xf32>) -> tensor<2x16x24xf32>
    %xent = sbp.softmax_xent %logits, %targets : (tensor<2x16x24xf32>, tensor<2x16xi32, #sbp.t<@tp, [B]>>) -> tensor<2x16xf32>
    %loss = sbp.mean %xent : (tensor<2x16xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// The same GPT on [dp, tp] = [2, 2], the batch split on dp.
// CHECK-LABEL: module @gpt_dp_tp
// Column-parallel biases S(0) (and their momentum), the others broadcast.
// CHECK: sbp.variable @h0.attn.q.bias : tensor<32xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h0.attn.q.bias.momentum : tensor<32xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h0.attn.k.bias : tensor<32xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h0.attn.v.bias : tensor<32xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h0.attn.c_proj.bias : tensor<32xf32, #sbp.t<@mesh, [B, B]>>
// CHECK: sbp.variable @h0.mlp.fc.bias : tensor<128xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h0.mlp.proj.bias : tensor<32xf32, #sbp.t<@mesh, [B, B]>>
// CHECK: sbp.variable @h1.attn.q.bias : tensor<32xf32, #sbp.t<@mesh, [B, S(0)]>>
// CHECK: sbp.variable @h1.mlp.fc.bias : tensor<128xf32, #sbp.t<@mesh, [B, S(0)]>>
// Block 0, attention: head-parallel, one all_reduce after the projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.causal_attention {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[A0:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NEXT: %[[R0:.*]] = sbp.all_reduce %[[A0]] {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.bias_add %[[R0]]
// Block 0, MLP: one all_reduce after the row-parallel projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.gelu {{.*}} -> tensor<2x16x128xf32, #sbp.t<@mesh, [S(0), S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[M0:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NEXT: %[[N0:.*]] = sbp.all_reduce %[[M0]] {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.bias_add %[[N0]]
// Block 1, attention: head-parallel, one all_reduce after the projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.causal_attention {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[A1:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NEXT: %[[R1:.*]] = sbp.all_reduce %[[A1]] {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.bias_add %[[R1]]
// Block 1, MLP: one all_reduce after the row-parallel projection.
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.gelu {{.*}} -> tensor<2x16x128xf32, #sbp.t<@mesh, [S(0), S(2)]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[M1:.*]] = sbp.matmul {{.*}} -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>
// CHECK-NEXT: %[[N1:.*]] = sbp.all_reduce %[[M1]] {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.bias_add %[[N1]]
// CHECK-NOT: sbp.all_reduce
// CHECK: sbp.metric "loss"
// Backward: per block and sub-block one all_reduce, of the activation
// gradient that enters the layer norm in front of it.
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G0:.*]] = sbp.all_reduce %{{.*}} {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G0]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G1:.*]] = sbp.all_reduce %{{.*}} {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G1]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G2:.*]] = sbp.all_reduce %{{.*}} {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G2]]
// CHECK-NOT: sbp.all_reduce
// CHECK: %[[G3:.*]] = sbp.all_reduce %{{.*}} {dim = 1 : i64} : (tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), P(sum)]>>) -> tensor<2x16x32xf32, #sbp.t<@mesh, [S(0), B]>>
// CHECK-NEXT: sbp.layer_norm_grad %[[G3]]
// The data-parallel gradient all_reduces, on dim 0 only: weights stay split on tp.
// CHECK-COUNT-37: sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<{{.*}}, #sbp.t<@mesh, [P(sum), {{B|S\(0\)|S\(1\)}}]>>) -> tensor<{{.*}}, #sbp.t<@mesh, [B, {{B|S\(0\)|S\(1\)}}]>>
// CHECK-NOT: sbp.all_reduce
// CHECK: return
module @gpt_dp_tp {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @wte : tensor<24x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @wpe : tensor<16x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 2
  sbp.variable @h0.ln_1.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 3
  sbp.variable @h0.ln_1.bias : tensor<32xf32> init #sbp.init<zeros> seed 4
  sbp.variable @h0.attn.q.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 5
  sbp.variable @h0.attn.q.bias : tensor<32xf32> init #sbp.init<zeros> seed 6
  sbp.variable @h0.attn.k.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 7
  sbp.variable @h0.attn.k.bias : tensor<32xf32> init #sbp.init<zeros> seed 8
  sbp.variable @h0.attn.v.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 9
  sbp.variable @h0.attn.v.bias : tensor<32xf32> init #sbp.init<zeros> seed 10
  sbp.variable @h0.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 11
  sbp.variable @h0.attn.c_proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 12
  sbp.variable @h0.ln_2.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 13
  sbp.variable @h0.ln_2.bias : tensor<32xf32> init #sbp.init<zeros> seed 14
  sbp.variable @h0.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 15
  sbp.variable @h0.mlp.fc.bias : tensor<128xf32> init #sbp.init<zeros> seed 16
  sbp.variable @h0.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 17
  sbp.variable @h0.mlp.proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 18
  sbp.variable @h1.ln_1.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 19
  sbp.variable @h1.ln_1.bias : tensor<32xf32> init #sbp.init<zeros> seed 20
  sbp.variable @h1.attn.q.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 21
  sbp.variable @h1.attn.q.bias : tensor<32xf32> init #sbp.init<zeros> seed 22
  sbp.variable @h1.attn.k.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 23
  sbp.variable @h1.attn.k.bias : tensor<32xf32> init #sbp.init<zeros> seed 24
  sbp.variable @h1.attn.v.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 25
  sbp.variable @h1.attn.v.bias : tensor<32xf32> init #sbp.init<zeros> seed 26
  sbp.variable @h1.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 27
  sbp.variable @h1.attn.c_proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 28
  sbp.variable @h1.ln_2.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 29
  sbp.variable @h1.ln_2.bias : tensor<32xf32> init #sbp.init<zeros> seed 30
  sbp.variable @h1.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.0, 0.02> seed 31
  sbp.variable @h1.mlp.fc.bias : tensor<128xf32> init #sbp.init<zeros> seed 32
  sbp.variable @h1.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.0, 0.02> seed 33
  sbp.variable @h1.mlp.proj.bias : tensor<32xf32> init #sbp.init<zeros> seed 34
  sbp.variable @ln_f.weight : tensor<32xf32> init #sbp.init<constant, 1.0, 0.0> seed 35
  sbp.variable @ln_f.bias : tensor<32xf32> init #sbp.init<zeros> seed 36
  sbp.variable @lm_head.weight : tensor<24x32xf32> init #sbp.init<normal, 0.0, 0.02> seed 37
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x16xi32, #sbp.t<@mesh, [S(0), B]>>
    %targets = sbp.input "targets" : tensor<2x16xi32, #sbp.t<@mesh, [S(0), B]>>
    %wte = sbp.parameter @wte : tensor<24x32xf32>
    %wpe = sbp.parameter @wpe : tensor<16x32xf32>
    %h0_ln_1_weight = sbp.parameter @h0.ln_1.weight : tensor<32xf32>
    %h0_ln_1_bias = sbp.parameter @h0.ln_1.bias : tensor<32xf32>
    %h0_attn_q_weight = sbp.parameter @h0.attn.q.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h0_attn_q_bias = sbp.parameter @h0.attn.q.bias : tensor<32xf32>
    %h0_attn_k_weight = sbp.parameter @h0.attn.k.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h0_attn_k_bias = sbp.parameter @h0.attn.k.bias : tensor<32xf32>
    %h0_attn_v_weight = sbp.parameter @h0.attn.v.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h0_attn_v_bias = sbp.parameter @h0.attn.v.bias : tensor<32xf32>
    %h0_attn_c_proj_weight = sbp.parameter @h0.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>
    %h0_attn_c_proj_bias = sbp.parameter @h0.attn.c_proj.bias : tensor<32xf32>
    %h0_ln_2_weight = sbp.parameter @h0.ln_2.weight : tensor<32xf32>
    %h0_ln_2_bias = sbp.parameter @h0.ln_2.bias : tensor<32xf32>
    %h0_mlp_fc_weight = sbp.parameter @h0.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h0_mlp_fc_bias = sbp.parameter @h0.mlp.fc.bias : tensor<128xf32>
    %h0_mlp_proj_weight = sbp.parameter @h0.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>
    %h0_mlp_proj_bias = sbp.parameter @h0.mlp.proj.bias : tensor<32xf32>
    %h1_ln_1_weight = sbp.parameter @h1.ln_1.weight : tensor<32xf32>
    %h1_ln_1_bias = sbp.parameter @h1.ln_1.bias : tensor<32xf32>
    %h1_attn_q_weight = sbp.parameter @h1.attn.q.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h1_attn_q_bias = sbp.parameter @h1.attn.q.bias : tensor<32xf32>
    %h1_attn_k_weight = sbp.parameter @h1.attn.k.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h1_attn_k_bias = sbp.parameter @h1.attn.k.bias : tensor<32xf32>
    %h1_attn_v_weight = sbp.parameter @h1.attn.v.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h1_attn_v_bias = sbp.parameter @h1.attn.v.bias : tensor<32xf32>
    %h1_attn_c_proj_weight = sbp.parameter @h1.attn.c_proj.weight : tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>
    %h1_attn_c_proj_bias = sbp.parameter @h1.attn.c_proj.bias : tensor<32xf32>
    %h1_ln_2_weight = sbp.parameter @h1.ln_2.weight : tensor<32xf32>
    %h1_ln_2_bias = sbp.parameter @h1.ln_2.bias : tensor<32xf32>
    %h1_mlp_fc_weight = sbp.parameter @h1.mlp.fc.weight : tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>
    %h1_mlp_fc_bias = sbp.parameter @h1.mlp.fc.bias : tensor<128xf32>
    %h1_mlp_proj_weight = sbp.parameter @h1.mlp.proj.weight : tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>
    %h1_mlp_proj_bias = sbp.parameter @h1.mlp.proj.bias : tensor<32xf32>
    %ln_f_weight = sbp.parameter @ln_f.weight : tensor<32xf32>
    %ln_f_bias = sbp.parameter @ln_f.bias : tensor<32xf32>
    %lm_head_weight = sbp.parameter @lm_head.weight : tensor<24x32xf32>
    %tok = sbp.embedding %wte, %ids : (tensor<24x32xf32>, tensor<2x16xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<2x16x32xf32>
    %emb = sbp.bias_add %tok, %wpe : (tensor<2x16x32xf32>, tensor<16x32xf32>) -> tensor<2x16x32xf32>
    %x = sbp.dropout %emb {p = 0.2 : f32, seed = 1 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_n1 = sbp.layer_norm %x, %h0_ln_1_weight, %h0_ln_1_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_q_mm = sbp.matmul %h0_n1, %h0_attn_q_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h0_q = sbp.bias_add %h0_q_mm, %h0_attn_q_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_k_mm = sbp.matmul %h0_n1, %h0_attn_k_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h0_k = sbp.bias_add %h0_k_mm, %h0_attn_k_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_v_mm = sbp.matmul %h0_n1, %h0_attn_v_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h0_v = sbp.bias_add %h0_v_mm, %h0_attn_v_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_att = sbp.causal_attention %h0_q, %h0_k, %h0_v {heads = 4 : i64} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_proj_mm = sbp.matmul %h0_att, %h0_attn_c_proj_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<2x16x32xf32>
    %h0_proj = sbp.bias_add %h0_proj_mm, %h0_attn_c_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_proj_drop = sbp.dropout %h0_proj {p = 0.2 : f32, seed = 2 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_x1 = sbp.add %x, %h0_proj_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_n2 = sbp.layer_norm %h0_x1, %h0_ln_2_weight, %h0_ln_2_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_fc_mm = sbp.matmul %h0_n2, %h0_mlp_fc_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x128xf32>
    %h0_fc = sbp.bias_add %h0_fc_mm, %h0_mlp_fc_bias : (tensor<2x16x128xf32>, tensor<128xf32>) -> tensor<2x16x128xf32>
    %h0_gelu = sbp.gelu %h0_fc : (tensor<2x16x128xf32>) -> tensor<2x16x128xf32>
    %h0_mlp_mm = sbp.matmul %h0_gelu, %h0_mlp_proj_weight {transpose_b = true} : (tensor<2x16x128xf32>, tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<2x16x32xf32>
    %h0_mlp = sbp.bias_add %h0_mlp_mm, %h0_mlp_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h0_mlp_drop = sbp.dropout %h0_mlp {p = 0.2 : f32, seed = 3 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h0_x2 = sbp.add %h0_x1, %h0_mlp_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_n1 = sbp.layer_norm %h0_x2, %h1_ln_1_weight, %h1_ln_1_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_q_mm = sbp.matmul %h1_n1, %h1_attn_q_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h1_q = sbp.bias_add %h1_q_mm, %h1_attn_q_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_k_mm = sbp.matmul %h1_n1, %h1_attn_k_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h1_k = sbp.bias_add %h1_k_mm, %h1_attn_k_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_v_mm = sbp.matmul %h1_n1, %h1_attn_v_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x32xf32>
    %h1_v = sbp.bias_add %h1_v_mm, %h1_attn_v_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_att = sbp.causal_attention %h1_q, %h1_k, %h1_v {heads = 4 : i64} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_proj_mm = sbp.matmul %h1_att, %h1_attn_c_proj_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<32x32xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<2x16x32xf32>
    %h1_proj = sbp.bias_add %h1_proj_mm, %h1_attn_c_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_proj_drop = sbp.dropout %h1_proj {p = 0.2 : f32, seed = 12 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_x1 = sbp.add %h0_x2, %h1_proj_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_n2 = sbp.layer_norm %h1_x1, %h1_ln_2_weight, %h1_ln_2_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_fc_mm = sbp.matmul %h1_n2, %h1_mlp_fc_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<128x32xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<2x16x128xf32>
    %h1_fc = sbp.bias_add %h1_fc_mm, %h1_mlp_fc_bias : (tensor<2x16x128xf32>, tensor<128xf32>) -> tensor<2x16x128xf32>
    %h1_gelu = sbp.gelu %h1_fc : (tensor<2x16x128xf32>) -> tensor<2x16x128xf32>
    %h1_mlp_mm = sbp.matmul %h1_gelu, %h1_mlp_proj_weight {transpose_b = true} : (tensor<2x16x128xf32>, tensor<32x128xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<2x16x32xf32>
    %h1_mlp = sbp.bias_add %h1_mlp_mm, %h1_mlp_proj_bias : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %h1_mlp_drop = sbp.dropout %h1_mlp {p = 0.2 : f32, seed = 13 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %h1_x2 = sbp.add %h1_x1, %h1_mlp_drop : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
    %xf = sbp.layer_norm %h1_x2, %ln_f_weight, %ln_f_bias {eps = 1.0e-05 : f32} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %logits = sbp.matmul %xf, %lm_head_weight {transpose_b = true} : (tensor<2x16x32xf32>, tensor<24x32xf32>) -> tensor<2x16x24xf32>
    %xent = sbp.softmax_xent %logits, %targets : (tensor<2x16x24xf32>, tensor<2x16xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<2x16xf32>
    %loss = sbp.mean %xent : (tensor<2x16xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

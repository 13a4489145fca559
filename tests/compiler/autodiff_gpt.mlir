// sbp-autodiff gradient rules of the transformer ops: embedding ->
// embedding_grad (no gradient for the ids), layer_norm -> one layer_norm_grad
// with three results, attention -> causal_attention_grad (dq, dk, dv),
// softmax/gelu -> their _grad ops, concat -> narrow per operand, narrow ->
// narrow_grad, transpose -> the inverse permutation, reshape -> reshape back,
// bias_add on trailing axes -> reduce_rows to the bias shape, and matmul on
// rank-3 operands (reshaping where the 2-D rule's result has other axes).
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff | FileCheck %s

// CHECK-LABEL: module @block
// CHECK: %[[IDS:.*]] = sbp.input "tokens"
// CHECK: %[[WTE:.*]] = sbp.parameter @wte
// CHECK: %[[G:.*]] = sbp.parameter @ln.g
// CHECK: %[[E:.*]] = sbp.embedding
// CHECK: %[[X:.*]] = sbp.bias_add %[[E]], %{{.*}} : (tensor<2x4x8xf32>, tensor<4x8xf32
// CHECK: %[[N:.*]] = sbp.layer_norm %[[X]]
// CHECK: %[[Q:.*]] = sbp.narrow %{{.*}} {axis = 2 : i64, begin = 0 : i64}
// CHECK: %[[K:.*]] = sbp.narrow %{{.*}} {axis = 2 : i64, begin = 8 : i64}
// CHECK: %[[A:.*]] = sbp.causal_attention %[[Q]], %[[K]], %[[N]] {heads = 2 : i64}
// CHECK: %[[C:.*]] = sbp.concat %[[A]], %[[N]] {axis = 2 : i64}
// CHECK: %[[T:.*]] = sbp.transpose %[[C]] {perm = array<i64: 2, 0, 1>} : (tensor<2x4x16xf32>) -> tensor<16x2x4xf32>
// CHECK: %[[R:.*]] = sbp.reshape %[[T]] : (tensor<16x2x4xf32>) -> tensor<16x8xf32>
// CHECK: %[[H:.*]] = sbp.gelu %[[R]]
// CHECK: %[[S:.*]] = sbp.softmax %[[H]]
// Backward, in reverse:
// CHECK: %[[DS:.*]] = sbp.mean_grad
// CHECK: %[[DH:.*]] = sbp.softmax_grad %[[DS]], %[[S]] : (tensor<16x8xf32>, tensor<16x8xf32>) -> tensor<16x8xf32>
// CHECK: %[[DR:.*]] = sbp.gelu_grad %[[DH]], %[[R]]
// CHECK: %[[DT:.*]] = sbp.reshape %[[DR]] : (tensor<16x8xf32>) -> tensor<16x2x4xf32>
// CHECK: %[[DC:.*]] = sbp.transpose %[[DT]] {perm = array<i64: 1, 2, 0>} : (tensor<16x2x4xf32>) -> tensor<2x4x16xf32>
// CHECK: %[[DA:.*]] = sbp.narrow %[[DC]] {axis = 2 : i64, begin = 0 : i64} : (tensor<2x4x16xf32>) -> tensor<2x4x8xf32>
// CHECK: %[[DN1:.*]] = sbp.narrow %[[DC]] {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x16xf32>) -> tensor<2x4x8xf32>
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = sbp.causal_attention_grad %[[DA]], %[[Q]], %[[K]], %[[N]] {heads = 2 : i64}
// CHECK: %[[DN:.*]] = sbp.add %[[DN1]], %[[DV]]
// CHECK-DAG: sbp.narrow_grad %[[DK]] {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x24xf32>
// CHECK-DAG: sbp.narrow_grad %[[DQ]] {axis = 2 : i64, begin = 0 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x24xf32>
// CHECK: %[[DX:.*]], %[[DG:.*]], %[[DB:.*]] = sbp.layer_norm_grad %{{.*}}, %[[X]], %[[G]] {eps = 9.99999974E-6 : f32}
// CHECK: %[[DWPE:.*]] = sbp.reduce_rows %[[DX]] : (tensor<2x4x8xf32>) -> tensor<4x8xf32>
// CHECK: %[[DWTE:.*]] = sbp.embedding_grad %[[DX]], %[[IDS]] : (tensor<2x4x8xf32>, tensor<2x4xi32{{.*}}>) -> tensor<11x8xf32>
// CHECK-DAG: sbp.sgd %[[DG]] {{{.*}}variable = @ln.g
// CHECK-DAG: sbp.sgd %[[DB]] {{{.*}}variable = @ln.b
// CHECK-DAG: sbp.sgd %[[DWPE]] {{{.*}}variable = @wpe
// CHECK-DAG: sbp.sgd %[[DWTE]] {{{.*}}variable = @wte
module @block {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @wte : tensor<11x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @wpe : tensor<4x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 2
  sbp.variable @ln.g : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<constant, 1.0, 0.0> seed 3
  sbp.variable @ln.b : tensor<8xf32, #sbp.t<@one, [B]>> init #sbp.init<zeros> seed 4
  sbp.variable @wqk : tensor<24x8xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 5
  func.func @train() {
    %ids = sbp.input "tokens" : tensor<2x4xi32, #sbp.t<@one, [B]>>
    %wte = sbp.parameter @wte : tensor<11x8xf32, #sbp.t<@one, [B]>>
    %wpe = sbp.parameter @wpe : tensor<4x8xf32, #sbp.t<@one, [B]>>
    %g = sbp.parameter @ln.g : tensor<8xf32, #sbp.t<@one, [B]>>
    %b = sbp.parameter @ln.b : tensor<8xf32, #sbp.t<@one, [B]>>
    %wqk = sbp.parameter @wqk : tensor<24x8xf32, #sbp.t<@one, [B]>>
    %e = sbp.embedding %wte, %ids : (tensor<11x8xf32, #sbp.t<@one, [B]>>, tensor<2x4xi32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %x = sbp.bias_add %e, %wpe : (tensor<2x4x8xf32>, tensor<4x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %n = sbp.layer_norm %x, %g, %b {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<8xf32, #sbp.t<@one, [B]>>, tensor<8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x8xf32>
    %qk = sbp.matmul %n, %wqk {transpose_b = true} : (tensor<2x4x8xf32>, tensor<24x8xf32, #sbp.t<@one, [B]>>) -> tensor<2x4x24xf32>
    %q = sbp.narrow %qk {axis = 2 : i64, begin = 0 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %k = sbp.narrow %qk {axis = 2 : i64, begin = 8 : i64} : (tensor<2x4x24xf32>) -> tensor<2x4x8xf32>
    %a = sbp.causal_attention %q, %k, %n {heads = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %c = sbp.concat %a, %n {axis = 2 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x16xf32>
    %t = sbp.transpose %c {perm = array<i64: 2, 0, 1>} : (tensor<2x4x16xf32>) -> tensor<16x2x4xf32>
    %r = sbp.reshape %t : (tensor<16x2x4xf32>) -> tensor<16x8xf32>
    %h = sbp.gelu %r : (tensor<16x8xf32>) -> tensor<16x8xf32>
    %s = sbp.softmax %h : (tensor<16x8xf32>) -> tensor<16x8xf32>
    %loss = sbp.mean %s : (tensor<16x8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1>} : tensor<f32>
    return
  }
}

// -----

// matmul of rank-3 operands whose 2-D gradient has other axes than the
// operand: a [2, 3, 4] x b [4, 5] is fine as is, b [2, 2, 5] (K = 4 as two
// axes) gets its gradient reshaped, and a transposed b of rank 3 ([5, 3, 4],
// N = 15 as two axes) has dC folded to [2, 3, 15] first.
// CHECK-LABEL: module @matmul3d
// CHECK: %[[DC2:.*]] = sbp.mean_grad %{{.*}} : (tensor<f32>) -> tensor<2x3x5x3xf32>
// CHECK: %[[DC1:.*]] = sbp.mean_grad %{{.*}} : (tensor<f32>) -> tensor<2x3x5xf32>
// CHECK: %[[F:.*]] = sbp.reshape %[[DC2]] : (tensor<2x3x5x3xf32>) -> tensor<2x3x15xf32>
// CHECK: %[[DB3:.*]] = sbp.matmul %[[F]], %{{.*}} {transpose_a = true} : (tensor<2x3x15xf32>, tensor<2x3x4xf32{{.*}}>) -> tensor<15x4xf32>
// CHECK: sbp.reshape %[[DB3]] : (tensor<15x4xf32>) -> tensor<5x3x4xf32>
// CHECK: %[[DBK:.*]] = sbp.matmul %{{.*}}, %[[DC1]] {transpose_a = true} : (tensor<2x3x4xf32{{.*}}>, tensor<2x3x5xf32>) -> tensor<4x5xf32>
// CHECK: sbp.reshape %[[DBK]] : (tensor<4x5xf32>) -> tensor<2x2x5xf32>
module @matmul3d {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w1 : tensor<2x2x5xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 1
  sbp.variable @w2 : tensor<5x3x4xf32, #sbp.t<@one, [B]>> init #sbp.init<normal, 0.0, 0.02> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<2x3x4xf32, #sbp.t<@one, [B]>>
    %w1 = sbp.parameter @w1 : tensor<2x2x5xf32, #sbp.t<@one, [B]>>
    %w2 = sbp.parameter @w2 : tensor<5x3x4xf32, #sbp.t<@one, [B]>>
    %y1 = sbp.matmul %x, %w1 : (tensor<2x3x4xf32, #sbp.t<@one, [B]>>, tensor<2x2x5xf32, #sbp.t<@one, [B]>>) -> tensor<2x3x5xf32>
    %y2 = sbp.matmul %x, %w2 {transpose_b = true} : (tensor<2x3x4xf32, #sbp.t<@one, [B]>>, tensor<5x3x4xf32, #sbp.t<@one, [B]>>) -> tensor<2x3x5x3xf32>
    %l1 = sbp.mean %y1 : (tensor<2x3x5xf32>) -> tensor<f32>
    %l2 = sbp.mean %y2 : (tensor<2x3x5x3xf32>) -> tensor<f32>
    %loss = sbp.add %l1, %l2 : (tensor<f32>, tensor<f32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1>} : tensor<f32>
    return
  }
}

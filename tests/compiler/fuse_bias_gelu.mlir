// sbp-fuse-bias-gelu: bias_add then gelu become one bias_gelu whose first
// result (the pre-activation) gelu_grad still reads; a gelu of anything else,
// or one the user laid out unlike its input, stays as it is. Through the
// whole pipeline the fused op is one plan task with two outputs laid out
// alike.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-fuse-bias-gelu | FileCheck %s
// RUN: sbpflow-opt %s --split-input-file --sbp-compile --sbp-emit-plan=print=true -o /dev/null | FileCheck %s --check-prefix=PLAN

// CHECK-LABEL: module @mlp
// CHECK: %[[PRE:.*]], %[[Y:.*]] = sbp.bias_gelu %{{.*}}, %{{.*}} : (tensor<8x16xf32>, tensor<16xf32{{.*}}>) -> (tensor<8x16xf32>, tensor<8x16xf32>)
// CHECK-NOT: sbp.bias_add
// CHECK-NOT: sbp.gelu %
// CHECK: sbp.matmul %[[Y]], %{{.*}}
// CHECK: sbp.matmul %[[Y]], %{{.*}} {transpose_a = true}
// CHECK: sbp.gelu_grad %{{.*}}, %[[PRE]]

// PLAN-LABEL: plan version 6 of 'mlp'
// PLAN: %[[P:[0-9]+]] bias_gelu_{{[0-9]+}}:0 F32[8,16] placement 0 [S(0)]
// PLAN-NEXT: %[[Q:[0-9]+]] bias_gelu_{{[0-9]+}}:1 F32[8,16] placement 0 [S(0)]
// PLAN: BiasGelu (%{{[0-9]+}}, %{{[0-9]+}}) -> (%[[P]], %[[Q]])
// PLAN: GeluGrad (%{{[0-9]+}}, %[[P]])
module @mlp {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w1 : tensor<4x16xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  sbp.variable @b1 : tensor<16xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 2
  sbp.variable @w2 : tensor<16x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 3
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %w1 = sbp.parameter @w1 : tensor<4x16xf32, #sbp.t<@dp, [B]>>
    %b1 = sbp.parameter @b1 : tensor<16xf32, #sbp.t<@dp, [B]>>
    %w2 = sbp.parameter @w2 : tensor<16x3xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w1 : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x16xf32, #sbp.t<@dp, [B]>>) -> tensor<8x16xf32>
    %zb = sbp.bias_add %z, %b1 : (tensor<8x16xf32>, tensor<16xf32, #sbp.t<@dp, [B]>>) -> tensor<8x16xf32>
    %h = sbp.gelu %zb : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %o = sbp.matmul %h, %w2 : (tensor<8x16xf32>, tensor<16x3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %o, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// CHECK-LABEL: module @unfused
// CHECK: %[[ZB:.*]] = sbp.bias_add
// CHECK-NEXT: sbp.gelu %[[ZB]] : (tensor<8x16xf32>) -> tensor<8x16xf32, #sbp.t<@dp, [B]>>
// CHECK-NEXT: %[[R:.*]] = sbp.relu
// CHECK-NEXT: sbp.gelu %[[R]]
// CHECK-NOT: sbp.bias_gelu
module @unfused {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  func.func @train() {
    %x = sbp.input "x" : tensor<8x16xf32, #sbp.t<@dp, [S(0)]>>
    %b = sbp.input "b" : tensor<16xf32, #sbp.t<@dp, [B]>>
    %zb = sbp.bias_add %x, %b : (tensor<8x16xf32, #sbp.t<@dp, [S(0)]>>, tensor<16xf32, #sbp.t<@dp, [B]>>) -> tensor<8x16xf32>
    %h = sbp.gelu %zb : (tensor<8x16xf32>) -> tensor<8x16xf32, #sbp.t<@dp, [B]>>
    %r = sbp.relu %x : (tensor<8x16xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x16xf32>
    %g = sbp.gelu %r : (tensor<8x16xf32>) -> tensor<8x16xf32>
    sbp.output "h" %h : tensor<8x16xf32, #sbp.t<@dp, [B]>>
    sbp.output "g" %g : tensor<8x16xf32>
    return
  }
}

// sbp-emit-plan: the flatbuffers plan (dumped as text with print=true): one
// program per function, tensors with SBP and arena offsets, tasks in op order,
// data and control registers, collective order, inputs and metrics.
// RUN: sbpflow-opt %s --sbp-compile --sbp-emit-plan=print=true -o /dev/null | FileCheck %s
// RUN: sbpflow-opt %s --sbp-compile --sbp-emit-plan=output=%t.plan -o /dev/null && test -s %t.plan
// RUN: not sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-emit-plan=print=true 2>&1 | FileCheck %s --check-prefix=UNPLANNED
// RUN: not sbpflow-opt %s --sbp-emit-plan=print=true 2>&1 | FileCheck %s --check-prefix=UNPROPAGATED

// CHECK: plan version 1 source "linear"
// CHECK-NEXT: placement 0 @dp CPU ranks [0, 1] hierarchy [2]
// CHECK-NEXT: variable 0 @w F32 [4, 3] placement 0 sbp [B] init Uniform(-5.000000e-01, 5.000000e-01) seed 7
// CHECK-NEXT: variable 1 @w.momentum F32 [4, 3] placement 0 sbp [B] init Zeros(0.000000e+00, 0.000000e+00) seed 0
// CHECK-NEXT: program train arena 384
// CHECK-NEXT: input "x" t0
// CHECK-NEXT: input "y" t1
// CHECK-NEXT: tensor t0 input_0:0 F32 [8, 4] sbp [S(0)] offset 0 bytes 64
// CHECK-NEXT: tensor t1 input_1:0 I32 [8] sbp [S(0)] offset 64 bytes 16
// CHECK-NEXT: tensor t2 parameter_2:0 F32 [4, 3] sbp [B] variable 0 bytes 48
// CHECK: tensor t9 matmul_9:0 F32 [4, 3] sbp [P(sum)] offset [[GRAD:[0-9]+]] bytes 48
// The all-reduce runs in place.
// CHECK-NEXT: tensor t10 all_reduce_10:0 F32 [4, 3] sbp [B] offset [[GRAD]] bytes 48
// CHECK: task 3 MatMul in [0, 2] out [3]
// CHECK: task 5 Mean in [4] out [5] count 8
// CHECK: task 7 MeanGrad in [6] out [7] count 8
// CHECK: task 10 AllReduce in [9] out [10] comm seq 0 dim 0 reduce Sum axes -1->-1
// CHECK-NEXT: task 11 SgdMomentum in [10] out [] lr 5.000000e-01 momentum 9.000000e-01 param 0 buffer 1
// CHECK: register data t0: 0 -> [9, 3] count 1
// CHECK: register data t10: 10 -> [11] count 1
// The forward matmul reads @w: it must finish before sgd writes @w.
// CHECK: register control: 3 -> [11]
// The labels' bytes are reused by the weight gradient: their readers go first.
// CHECK: register control: 4 -> [9]
// CHECK: metric "loss" t5 Sum
// CHECK: program eval arena 192
// CHECK: task 4 CountCorrect in [3, 1] out [4]
// CHECK-NOT: register control
// CHECK: metric "correct" t4 Sum

// UNPLANNED: error: 'func.func' op has no sbp.arena_bytes; run sbp-plan-memory before emitting
// UNPROPAGATED: error: 'sbp.matmul' op has a result without SBP; run sbp-propagate
module @linear {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 7
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %z, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.5, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
  func.func @eval() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %c = sbp.count_correct %z, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<f32>
    sbp.metric "correct" %c : tensor<f32>
    return
  }
}

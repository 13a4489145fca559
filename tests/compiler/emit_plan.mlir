// sbp-emit-plan: the flatbuffers plan (dumped as text with print=true): one
// program per function, tensors with SBP and arena offsets, tasks in op order,
// data and control registers, collective order, inputs and metrics.
// RUN: sbpflow-opt %s --sbp-compile --sbp-emit-plan=print=true -o /dev/null | FileCheck %s
// RUN: sbpflow-opt %s --sbp-compile --sbp-emit-plan=output=%t.plan -o /dev/null && test -s %t.plan
// RUN: not sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-emit-plan=print=true 2>&1 | FileCheck %s --check-prefix=UNPLANNED
// RUN: not sbpflow-opt %s --sbp-emit-plan=print=true 2>&1 | FileCheck %s --check-prefix=UNPROPAGATED

// CHECK: plan version 6 of 'linear'
// CHECK-NEXT: placements:
// CHECK-NEXT: #0 dp CPU hierarchy [2] ranks [0,1]
// CHECK-NEXT: variables:
// CHECK-NEXT: #0 w F32[4,3] placement 0 [B] init Uniform(-0.5, 0.5, seed 7)
// CHECK-NEXT: #1 w.momentum F32[4,3] placement 0 [B] init Zeros(0, 0, seed 0)
// CHECK-NEXT: program train (arena 384 bytes)
// CHECK-NEXT: tensors:
// CHECK-NEXT: %0 input_0:0 F32[8,4] placement 0 [S(0)] @0 (64 bytes)
// CHECK-NEXT: %1 input_1:0 I32[8] placement 0 [S(0)] @64 (16 bytes)
// CHECK-NEXT: %2 parameter_2:0 F32[4,3] placement 0 [B] = variable #0
// CHECK: %9 matmul_9:0 F32[4,3] placement 0 [P(sum)] @[[GRAD:[0-9]+]] (48 bytes)
// The all-reduce runs in place.
// CHECK-NEXT: %10 all_reduce_10:0 F32[4,3] placement 0 [B] @[[GRAD]] (48 bytes)
// Task names carry the op and its source line (a gradient op the line of its
// forward op): runtime errors point at the model.
// CHECK: 3 sbp.matmul@emit_plan.mlir:{{[0-9]+}}:10 MatMul (%0, %2) -> (%3) queue Compute
// CHECK: 5 sbp.mean@emit_plan.mlir:[[MEAN:[0-9]+]]:13 Mean (%4) -> (%5) queue Compute count 8
// CHECK: 7 sbp.mean_grad@emit_plan.mlir:[[MEAN]]:13 MeanGrad (%6) -> (%7) queue Compute count 8
// CHECK: 9 sbp.matmul@{{.*}} MatMul (%0, %8) -> (%9) queue Compute transpose_a
// CHECK-NEXT: 10 sbp.all_reduce@{{.*}} AllReduce (%9) -> (%10) queue Comm collective #0 dim 0 reduce Sum
// CHECK-NEXT: 11 sbp.sgd@{{.*}} SgdMomentum (%10) -> () queue Compute lr 0.5 momentum 0.9 weight_decay 0 variable #0 buffer #1
// CHECK: registers:
// CHECK-NEXT: task 0 -> [9,3] %0 x1
// CHECK: task 10 -> [11] %10 x1
// The forward matmul reads @w: it must finish before sgd writes @w.
// CHECK: task 3 -> [11] control x1
// The labels' bytes are reused by the weight gradient: their readers go first.
// CHECK: task 4 -> [9] control x1
// CHECK: metric loss <- %5 (Sum)
// CHECK: program eval (arena 192 bytes)
// CHECK: 4 sbp.count_correct@{{.*}} CountCorrect (%3, %1) -> (%4) queue Compute
// CHECK-NOT: control
// CHECK: metric correct <- %4 (Sum)

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

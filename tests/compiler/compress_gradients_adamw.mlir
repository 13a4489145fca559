// DGC and top-k under AdamW (sbp-compress-gradients): as momentum
// correction accumulates SGD's update rather than the gradient, the codec
// takes AdamW's moments (one row per rank: DGC's m, the accumulation v and
// the second moment s; top-k's residual, m and s; momentum = beta1, beta2
// and eps), the optimiser becomes SGD at AdamW's learning rate with its
// decay (it applies the group's summed update), AdamW's own slots go, and
// the gradient leaves the clipping norm (the codec clips it locally, the
// threshold over sqrt(ranks)). Where every gradient is compressed, the norm
// and the clip_scale go entirely. Other codecs leave AdamW as it is.
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=dgc:0.001 min-elements=0" | FileCheck %s
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=dgc:0.001 min-elements=0" | sbpflow-opt --split-input-file | FileCheck %s
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=topk2bit:0.01 min-elements=0" | FileCheck %s --check-prefix=TOPK
// RUN: sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=qsgd:4 min-elements=0" | FileCheck %s --check-prefix=QSGD
// RUN: sbpflow-opt %s --split-input-file --sbp-compile="compress=dgc:0.001" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=PLAN

// The plan (what `sbpflow inspect` prints) carries AdamW's coefficients.
// PLAN: AllReduce ({{.*}}codec Dgc density 0.001 bits 0 rank 0 momentum 0.9 clip 0.707107 beta2 0.99 eps 1e-08 {{.*}}state #1 #2 #3 step #4
// PLAN: SgdMomentum ({{.*}}lr 0.001 momentum 0 weight_decay 0.1 variable #0

// CHECK-LABEL: module @mixed
// CHECK: sbp.variable @w.codec.m : tensor<2x2048xf32, #sbp.t<@dp, [S(0)]>>
// CHECK-NEXT: sbp.variable @w.codec.v : tensor<2x2048xf32, #sbp.t<@dp, [S(0)]>>
// CHECK-NEXT: sbp.variable @w.codec.s : tensor<2x2048xf32, #sbp.t<@dp, [S(0)]>>
// CHECK-NEXT: sbp.variable @w.codec.step : tensor<i32
// CHECK-NOT: @w.adam_
// CHECK: sbp.variable @b.adam_m
// CHECK: %[[BGRAD:.*]] = sbp.all_reduce %{{.*}} {dim = 0 : i64} : (tensor<32xf32
// CHECK: %[[BSQ:.*]] = sbp.square_sum %[[BGRAD]]
// CHECK: %[[WGRAD:.*]] = sbp.all_reduce %{{.*}} {codec = #sbp.codec<dgc, density = 1.000000e-03, momentum = 0.89999997615814208, clip = 0.70710678118654746, beta2 = 0.99000000953674316, eps = 9.9999999392252903E-9, seed = {{[0-9]+}}>, dim = 0 : i64, state = [@w.codec.m, @w.codec.v, @w.codec.s], step = @w.codec.step}
// CHECK-NOT: sbp.square_sum %[[WGRAD]]
// CHECK: %[[SCALE:.*]] = sbp.clip_scale %[[BSQ]] {max_norm = 1.000000e+00 : f32}
// CHECK-DAG: sbp.adamw %[[BGRAD]], %[[SCALE]] {{{.*}}m = @b.adam_m
// CHECK-DAG: sbp.sgd %[[WGRAD]] {lr = 1.000000e-03 : f32, momentum = 0.000000e+00 : f32, variable = @w, weight_decay = 1.000000e-01 : f32} : tensor<64x32xf32

// TOPK-LABEL: module @mixed
// TOPK: sbp.variable @w.codec.residual : tensor<2x2048xf32
// TOPK-NEXT: sbp.variable @w.codec.m : tensor<2x2048xf32
// TOPK-NEXT: sbp.variable @w.codec.s : tensor<2x2048xf32
// TOPK-NOT: @w.adam_
// TOPK: codec = #sbp.codec<topk2bit, density = 1.000000e-02, momentum = 0.89999997615814208, clip = 0.70710678118654746, beta2 = 0.99000000953674316, eps = 9.9999999392252903E-9, seed = {{[0-9]+}}>, dim = 0 : i64, state = [@w.codec.residual, @w.codec.m, @w.codec.s]
// TOPK: sbp.sgd %{{.*}} {lr = 1.000000e-03 : f32, momentum = 0.000000e+00 : f32, variable = @w, weight_decay = 1.000000e-01 : f32}

// QSGD-LABEL: module @mixed
// QSGD: sbp.variable @w.codec.step
// QSGD: sbp.variable @w.adam_m
// QSGD: codec = #sbp.codec<qsgd, bits = 4, bucket = 512, seed = {{[0-9]+}}>
// QSGD-NOT: sbp.sgd
// QSGD: sbp.adamw %{{.*}}, %{{.*}} {{{.*}}variable = @w,
module @mixed {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.1, 0.1> seed 1
  sbp.variable @b : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 2
  func.func @train() {
    %x = sbp.input "x" : tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<64x32xf32, #sbp.t<@dp, [B]>>
    %b = sbp.parameter @b : tensor<32xf32, #sbp.t<@dp, [B]>>
    %h = sbp.matmul %x, %w : (tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>, tensor<64x32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32>
    %hb = sbp.bias_add %h, %b : (tensor<256x32xf32>, tensor<32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32>
    %y = sbp.input "y" : tensor<256xi32, #sbp.t<@dp, [S(0)]>>
    %l = sbp.softmax_xent %hb, %y : (tensor<256x32xf32>, tensor<256xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<256xf32>
    %loss = sbp.mean %l : (tensor<256xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.001, beta2 = 0.99, weight_decay = 0.1>, max_grad_norm = 1.0 : f32} : tensor<f32>
    return
  }
}

// -----

// Both gradients DGC's (the bias by its own spec): no norm is left.
// CHECK-LABEL: module @all
// CHECK-NOT: sbp.square_sum
// CHECK-NOT: sbp.clip_scale
// CHECK-NOT: sbp.adamw
// CHECK-NOT: adam_
// CHECK: sbp.sgd %{{.*}} {lr = 1.000000e-03 : f32, momentum = 0.000000e+00 : f32, variable = @b, weight_decay = 0.000000e+00 : f32} : tensor<32xf32
// CHECK: sbp.sgd %{{.*}} {lr = 1.000000e-03 : f32, momentum = 0.000000e+00 : f32, variable = @w, weight_decay = 1.000000e-01 : f32} : tensor<64x32xf32
module @all {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.1, 0.1> seed 1
  sbp.variable @b : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 2 {compress = "dgc:0.1"}
  func.func @train() {
    %x = sbp.input "x" : tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<64x32xf32, #sbp.t<@dp, [B]>>
    %b = sbp.parameter @b : tensor<32xf32, #sbp.t<@dp, [B]>>
    %h = sbp.matmul %x, %w : (tensor<256x64xf32, #sbp.t<@dp, [S(0)]>>, tensor<64x32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32>
    %hb = sbp.bias_add %h, %b : (tensor<256x32xf32>, tensor<32xf32, #sbp.t<@dp, [B]>>) -> tensor<256x32xf32>
    %y = sbp.input "y" : tensor<256xi32, #sbp.t<@dp, [S(0)]>>
    %l = sbp.softmax_xent %hb, %y : (tensor<256x32xf32>, tensor<256xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<256xf32>
    %loss = sbp.mean %l : (tensor<256xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.001, beta2 = 0.99, weight_decay = 0.1>, max_grad_norm = 1.0 : f32} : tensor<f32>
    return
  }
}

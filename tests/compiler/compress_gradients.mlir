// sbp-compress-gradients: each gradient all-reduce gets the codec of its
// parameter's `compress` spec, else of the policy (1-D and small gradients
// stay dense under a global policy), else none; state and step counters
// become variables; DGC and sign take over SGD's momentum; a compressed all-reduce
// is never bucketed but issued right after its gradient; the plan carries
// the codec.
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-compress-gradients=policy=topk:0.01 --sbp-bucket-gradients | FileCheck %s --check-prefix=TOPK
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-compress-gradients=policy=topk:0.01 | sbpflow-opt | FileCheck %s --check-prefix=TOPK
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=topk:0.01 min-elements=0" --sbp-bucket-gradients | FileCheck %s --check-prefix=EARLY
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=dgc:0.001 warmup-steps=5 epoch-steps=100" | FileCheck %s --check-prefix=DGC
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=powersgd:4 min-elements=0" | FileCheck %s --check-prefix=POWER
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=powersgd:4 min-elements=0" --sbp-bucket-gradients | FileCheck %s --check-prefix=POWERBUCKET
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=powersgd:4 min-elements=0" --sbp-bucket-gradients=bucket-bytes=4096 | FileCheck %s --check-prefix=POWERSPLIT
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=lgreco min-elements=0" --sbp-bucket-gradients | FileCheck %s --check-prefix=LGRECOFUSED
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-compress-gradients=policy=sign | FileCheck %s --check-prefix=SIGN
// RUN: sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-compress-gradients | FileCheck %s --check-prefix=OWN
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=auto link-bytes-per-second=1.25e7" | FileCheck %s --check-prefix=SLOW
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=auto link-bytes-per-second=1e12" | FileCheck %s --check-prefix=FAST
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=auto link-bytes-per-second=1.25e7 codec-costs=%S/inputs/codec_costs_slow.json" | FileCheck %s --check-prefix=FAST
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-compress-gradients=policy=auto codec-costs=%S/inputs/missing.json" 2>&1 | FileCheck %s --check-prefix=NOCOSTS
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="compress=qsgd:4" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=PLAN
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-compress-gradients=policy=lgreco min-elements=0 lgreco-every=50" | FileCheck %s --check-prefix=LGRECO
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="compress=lgreco:topk2bit" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=LGPLAN
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compress-gradients=policy=lgreco:sign 2>&1 | FileCheck %s --check-prefix=BADFAMILY
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compress-gradients=policy=topk:2 2>&1 | FileCheck %s --check-prefix=BAD
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compress-gradients=policy=qsgd:9 2>&1 | FileCheck %s --check-prefix=BADBITS
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compress-gradients=policy=zip 2>&1 | FileCheck %s --check-prefix=BADNAME

// Residuals are [ranks, local elements], one row per rank; the step is an
// i32 scalar. fc1.weight (50176 elements) is compressed; fc2.weight (640,
// below min-elements) and the biases share the dense bucket.
// TOPK-DAG: sbp.variable @fc1.weight.codec.residual : tensor<4x50176xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros
// TOPK-DAG: sbp.variable @fc1.weight.codec.step : tensor<i32, #sbp.t<@dp, [B]>>
// TOPK-NOT: sbp.variable @fc2.weight.codec
// TOPK-NOT: bias.codec
// TOPK: sbp.all_reduce %{{[^{]*}} {dim = 0 : i64} : (tensor<10xf32
// TOPK: %[[W1:.*]] = sbp.all_reduce %{{.*}} {codec = #sbp.codec<topk, density = 1.000000e-02, seed = {{[0-9]+}}>, dim = 0 : i64, state = [@fc1.weight.codec.residual], step = @fc1.weight.codec.step}
// TOPK: sbp.sgd %[[W1]] {{.*}}momentum = 0.899999976 : f32, momentum_buffer = @fc1.weight.momentum, variable = @fc1.weight

// A compressed all-reduce is issued as soon as its gradient exists, so that
// it overlaps the rest of backward: fc2.weight's before relu_grad, and the
// dense bucket of the biases after the last bias gradient.
// EARLY: %[[DW2:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<64x10xf32
// EARLY-NEXT: sbp.all_reduce %[[DW2]] {codec = #sbp.codec<topk{{.*}}state = [@fc2.weight.codec.residual]
// EARLY-NEXT: sbp.relu_grad
// EARLY-NEXT: %[[DB1:.*]] = sbp.reduce_rows
// EARLY-NEXT: sbp.all_reduce %{{.*}}, %[[DB1]] {dim = 0 : i64}
// EARLY-NEXT: %[[DW1:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<784x64xf32
// EARLY-NEXT: sbp.all_reduce %[[DW1]] {codec = #sbp.codec<topk{{.*}}state = [@fc1.weight.codec.residual]

// DGC keeps u and v; SGD's momentum moves into the codec and the unused
// velocity slot goes; warm-up steps and epochs are recorded.
// DGC-DAG: sbp.variable @fc1.weight.codec.u : tensor<4x50176xf32
// DGC-DAG: sbp.variable @fc1.weight.codec.v : tensor<4x50176xf32
// DGC-NOT: sbp.variable @fc1.weight.momentum
// DGC: sbp.all_reduce {{.*}}codec = #sbp.codec<dgc, density = 1.000000e-03, momentum = 0.89{{[0-9]+}}, epoch_steps = 100, warmup = 5, seed = {{[0-9]+}}>{{.*}}state = [@fc1.weight.codec.u, @fc1.weight.codec.v]
// DGC-NEXT: sbp.sgd {{.*}}momentum = 0.000000e+00 : f32, variable = @fc1.weight

// EF-SignSGD compresses SGD's momentum as its reference code does: the
// codec keeps the residual and u, the optimiser's momentum goes.
// SIGN-DAG: sbp.variable @fc1.weight.codec.residual : tensor<4x50176xf32
// SIGN-DAG: sbp.variable @fc1.weight.codec.u : tensor<4x50176xf32
// SIGN-NOT: sbp.variable @fc1.weight.momentum
// SIGN: sbp.all_reduce {{.*}}codec = #sbp.codec<sign, bucket = 512, momentum = 0.89{{[0-9]+}}, seed = {{[0-9]+}}>{{.*}}state = [@fc1.weight.codec.residual, @fc1.weight.codec.u]
// SIGN-NEXT: sbp.sgd {{.*}}momentum = 0.000000e+00 : f32, variable = @fc1.weight

// PowerSGD rank 4: Q holds cols x rank per rank. fc2.weight (64 x 10)
// compresses 640 floats to 4 (64 + 10) = 296 (at least twofold).
// POWER-DAG: sbp.variable @fc1.weight.codec.q : tensor<4x256xf32, #sbp.t<@dp, [S(0)]>>
// POWER-DAG: sbp.variable @fc2.weight.codec.q : tensor<4x40xf32, #sbp.t<@dp, [S(0)]>>
// POWER: codec = #sbp.codec<powersgd, rank = 4, seed = {{[0-9]+}}>{{.*}}state = [@fc2.weight.codec.residual, @fc2.weight.codec.q]

// PowerSGD's all-reduces of one bucket are one: their P and Q travel in two
// all-reduces for all matrices. The first's codec (its seed) and step
// counter stay, every one's state in turn; fc1's counter goes.
// POWERBUCKET-NOT: sbp.variable @fc1.weight.codec.step
// POWERBUCKET: sbp.variable @fc2.weight.codec.step
// POWERBUCKET-NOT: sbp.variable @fc1.weight.codec.step
// POWERBUCKET: %[[DW1:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<784x64xf32
// POWERBUCKET-NEXT: %[[B:.*]]:2 = sbp.all_reduce %{{.*}}, %[[DW1]] {codec = #sbp.codec<powersgd, rank = 4, seed = {{[0-9]+}}>, dim = 0 : i64, state = [@fc2.weight.codec.residual, @fc2.weight.codec.q, @fc1.weight.codec.residual, @fc1.weight.codec.q], step = @fc2.weight.codec.step}
// POWERBUCKET: sbp.sgd %[[B]]#0 {{.*}}variable = @fc2.weight
// POWERBUCKET: sbp.sgd %[[B]]#1 {{.*}}variable = @fc1.weight
// With 4 KiB buckets fc2.weight (2.5 KB) and fc1.weight (200 KB) go apart,
// each with its own counter, fc2's as soon as its gradient is produced.
// POWERSPLIT: sbp.variable @fc1.weight.codec.step
// POWERSPLIT: sbp.variable @fc2.weight.codec.step
// POWERSPLIT: %[[DW2:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<64x10xf32
// POWERSPLIT-NEXT: sbp.all_reduce %[[DW2]] {codec = #sbp.codec<powersgd{{.*}}state = [@fc2.weight.codec.residual, @fc2.weight.codec.q], step = @fc2.weight.codec.step}
// POWERSPLIT: %[[DW1:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<784x64xf32
// POWERSPLIT-NEXT: sbp.all_reduce %[[DW1]] {codec = #sbp.codec<powersgd{{.*}}state = [@fc1.weight.codec.residual, @fc1.weight.codec.q], step = @fc1.weight.codec.step}
// Under L-GreCo too (each matrix's rank its own): the fused all-reduce holds
// layers 0 and 1, every matrix's accumulator after its residual and Q.
// LGRECOFUSED: sbp.all_reduce %{{.*}}, %{{.*}} {codec = #sbp.codec<powersgd{{.*}}lgreco = #sbp.lgreco<{{.*}}layer = 0, layers = 2{{.*}}state = [@fc2.weight.codec.residual, @fc2.weight.codec.q, @fc2.weight.codec.acc, @fc1.weight.codec.residual, @fc1.weight.codec.q, @fc1.weight.codec.acc], step = @fc2.weight.codec.step}

// A parameter's own spec wins, even on a 1-D gradient and over the policy;
// "none" keeps one dense.
module @own {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<64x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.1, 0.1> seed 1 {compress = "sign"}
  sbp.variable @b : tensor<32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 2 {compress = "qsgd:4"}
  sbp.variable @v : tensor<32x32xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 3 {compress = "none"}
  func.func @train() {
    %x = sbp.input "x" : tensor<8x64xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<64x32xf32, #sbp.t<@dp, [B]>>
    %b = sbp.parameter @b : tensor<32xf32, #sbp.t<@dp, [B]>>
    %v = sbp.parameter @v : tensor<32x32xf32, #sbp.t<@dp, [B]>>
    %h = sbp.matmul %x, %w : (tensor<8x64xf32, #sbp.t<@dp, [S(0)]>>, tensor<64x32xf32, #sbp.t<@dp, [B]>>) -> tensor<8x32xf32>
    %hb = sbp.bias_add %h, %b : (tensor<8x32xf32>, tensor<32xf32, #sbp.t<@dp, [B]>>) -> tensor<8x32xf32>
    %o = sbp.matmul %hb, %v : (tensor<8x32xf32>, tensor<32x32xf32, #sbp.t<@dp, [B]>>) -> tensor<8x32xf32>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %l = sbp.softmax_xent %o, %y : (tensor<8x32xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}
// OWN-DAG: sbp.variable @w.codec.residual : tensor<2x2048xf32
// OWN-DAG: sbp.variable @b.codec.step : tensor<i32
// OWN-NOT: @v.codec
// OWN-DAG: codec = #sbp.codec<sign, bucket = 512, seed = {{[0-9]+}}>{{.*}}state = [@w.codec.residual], step = @w.codec.step
// OWN-DAG: codec = #sbp.codec<qsgd, bits = 4, bucket = 512{{.*}}state = [], step = @b.codec.step

// auto: on a 100 Mbit/s link fc1.weight's dense all-reduce over 4 ranks (300
// KB a rank sends, 24 ms) costs more than either candidate; 2-bit top-k at 1%
// (6.5 KB and 0.4 ms of work at the cost model's measured rate) is cheaper
// than PowerSGD rank 4 (20 KB, 0.3 ms). On a very fast link nothing is worth
// compressing.
// SLOW: sbp.all_reduce {{.*}}codec = #sbp.codec<topk2bit, density = 1.000000e-02
// FAST-NOT: codec
// With codec costs measured as a thousand times dearer (codec-costs: the
// JSON of build/bin/codec_costs), nothing is worth compressing either.
// NOCOSTS: codec-costs '{{.*}}missing.json': {{.*}}No such file

// The plan carries the codec on the AllReduce's CollectiveAttrs.
// PLAN: AllReduce{{.*}} dim 0 reduce Sum codec Qsgd density 0 bits 4 rank 0 momentum 0 clip 0 warmup_steps 0 epoch_steps 0 bucket 512 seed {{[0-9]+}} state step #{{[0-9]+}}

// L-GreCo: PowerSGD ranks 2 to 8 per layer (the paper's repository: half
// to twice the default), the codec at the default (rank 4) and Q sized for
// rank 8; each layer an accumulator of its last gradients; one shared table
// [layers, 2 x candidates], choice and previous choice starting at the
// default, a pending count; each layer its row.
// LGRECO-DAG: sbp.variable @fc1.weight.codec.q : tensor<4x512xf32
// LGRECO-DAG: sbp.variable @fc1.weight.codec.acc : tensor<4x50176xf32, #sbp.t<@dp, [S(0)]>>
// LGRECO-DAG: sbp.variable @lgreco.errors : tensor<2x14xf32, #sbp.t<@dp, [B]>>
// LGRECO-DAG: sbp.variable @lgreco.choice : tensor<2xi32, #sbp.t<@dp, [B]>> init #sbp.init<constant, 2.0
// LGRECO-DAG: sbp.variable @lgreco.previous : tensor<2xi32
// LGRECO-DAG: sbp.variable @lgreco.pending : tensor<i32
// LGRECO: codec = #sbp.codec<powersgd, rank = 4, {{.*}}lgreco = #sbp.lgreco<candidates = [2.000000e+00, 3.000000e+00, 4.000000e+00, 5.000000e+00, 6.000000e+00, 7.000000e+00, 8.000000e+00], default_index = 2, layer = 0, layers = 2, every = 50>, lgreco_state = [@lgreco.errors, @lgreco.choice, @lgreco.previous, @lgreco.pending], state = [@fc2.weight.codec.residual, @fc2.weight.codec.q, @fc2.weight.codec.acc]
// LGRECO: lgreco = #sbp.lgreco<{{.*}}layer = 1, layers = 2

// The plan carries L-GreCo inside the codec (inspect prints both).
// LGPLAN: codec TopK2Bit density 0.01 {{.*}} lgreco candidates 0.0025 0.005 0.01 0.02 0.04 default 2 layer 0 of 1 every 100 errors #{{[0-9]+}} choice #{{[0-9]+}} previous #{{[0-9]+}} pending #{{[0-9]+}}
// BADFAMILY: L-GreCo adapts powersgd, topk, topk2bit or qsgd, not 'sign'

// BAD: error: sbp-compress-gradients: bad compression spec 'topk:2': the density must be a number in (0, 1]
// BADBITS: bad compression spec 'qsgd:9': QSGD's bits must be an integer from 2 to 8
// BADNAME: bad compression spec 'zip': unknown codec 'zip'

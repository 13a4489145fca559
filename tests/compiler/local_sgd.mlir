// sbp-local-sgd: with --sync diloco:H the replicas (the first hierarchy
// dimension) train alone: the training function's gradient all-reduces
// become local estimates (each replica's own gradient), the parameters and
// their optimiser state become per-replica variables, and @outer sums each
// parameter's pseudo-gradient (anchor - parameter) across replicas and
// applies DiLoCo's outer Nesterov step; sbp.schedule runs @outer after every
// H steps of @train. The plan carries all of it.
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:10 | FileCheck %s --check-prefix=DILOCO
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:10 | sbpflow-opt | FileCheck %s --check-prefix=DILOCO
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:10 | FileCheck %s --check-prefix=OUTERS
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=diloco:1 outer-lr=1 outer-momentum=0" | FileCheck %s --check-prefix=PLAIN
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:10 --sbp-bucket-gradients | FileCheck %s --check-prefix=BUCKET
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=ddp | FileCheck %s --check-prefix=DDP
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="sync=diloco:10" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=PLAN

// Parameters and SGD's momentum are per replica; the anchor starts as the
// parameter (same init and seed), the outer momentum at zero.
// DILOCO-DAG: sbp.variable @fc1.weight : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17 {replica_dim = 0 : i64}
// DILOCO-DAG: sbp.variable @fc1.weight.outer_anchor : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17{{$}}
// DILOCO-DAG: sbp.variable @fc1.weight.outer_momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0{{$}}
// DILOCO-DAG: sbp.variable @fc1.weight.momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0 {replica_dim = 0 : i64}
// DILOCO-DAG: sbp.variable @fc2.bias : tensor<10xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 20 {replica_dim = 0 : i64}
// DILOCO: sbp.schedule "diloco" @train every 10 then [@outer]
// DILOCO-LABEL: func.func @train
// DILOCO-NOT: sbp.all_reduce
// DILOCO: %[[G:.*]] = sbp.local_estimate %{{.*}} {dim = 0 : i64, factor = 4.000000e+00 : f32} : (tensor<784x64xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<784x64xf32, #sbp.t<@dp, [B]>>
// DILOCO-NOT: sbp.all_reduce
// DILOCO: sbp.sgd %[[G]] {{.*}}variable = @fc1.weight
// DILOCO-LABEL: func.func @outer
// DILOCO: %[[A:.*]] = sbp.parameter @fc1.weight.outer_anchor
// DILOCO: %[[W:.*]] = sbp.parameter @fc1.weight :
// DILOCO: %[[D:.*]] = sbp.pseudo_gradient %[[A]], %[[W]] {dim = 0 : i64} : (tensor<784x64xf32, #sbp.t<@dp, [B]>>, tensor<784x64xf32, #sbp.t<@dp, [B]>>) -> tensor<784x64xf32, #sbp.t<@dp, [P(sum)]>>
// DILOCO: %[[S:.*]] = sbp.all_reduce %[[D]] {dim = 0 : i64}
// DILOCO: sbp.outer_step %[[S]] {anchor = @fc1.weight.outer_anchor, clip = 0.000000e+00 : f32, gap_penalty = 1.000000e+00 : f32, lr = 0.699999988 : f32, momentum = 0.899999976 : f32, momentum_buffer = @fc1.weight.outer_momentum, nesterov = true, replicas = 4 : i64, variable = @fc1.weight}
// DILOCO-NOT: sbp.outer_step
// OUTERS-LABEL: func.func @outer
// OUTERS-COUNT-4: sbp.outer_step
// OUTERS-NOT: sbp.outer_step

// Outer lr 1 without momentum: the outer step sets every replica to the
// replicas' mean (no momentum buffer).
// PLAIN: sbp.schedule "diloco" @train every 1 then [@outer]
// PLAIN-NOT: outer_momentum
// PLAIN: sbp.outer_step %{{.*}} {anchor = @fc1.weight.outer_anchor, clip = 0.000000e+00 : f32, gap_penalty = 1.000000e+00 : f32, lr = 1.000000e+00 : f32, momentum = 0.000000e+00 : f32, nesterov = true, replicas = 4 : i64, variable = @fc1.weight}

// The pseudo-gradients' all-reduces are fused into one bucket, as
// gradients are.
// BUCKET-LABEL: func.func @outer
// BUCKET-COUNT-1: sbp.all_reduce
// BUCKET-NOT: sbp.all_reduce

// ddp leaves the module as it is.
// DDP-NOT: replica_dim
// DDP-NOT: sbp.schedule
// DDP-NOT: local_estimate
// DDP-COUNT-4: sbp.all_reduce

// PLAN: #0 fc1.weight F32[784,64] placement 0 [B] init Uniform(-0.0357, 0.0357, seed 17) per replica of dim 0
// PLAN: fc1.weight.outer_anchor F32[784,64] placement 0 [B] init Uniform(-0.0357, 0.0357, seed 17){{$}}
// PLAN: schedule diloco: train x10, then outer
// PLAN-LABEL: program train
// PLAN: Scale (%{{[0-9]+}}) -> (%{{[0-9]+}}) queue Compute factor 4
// PLAN-NOT: AllReduce
// PLAN-LABEL: program outer
// PLAN: PseudoGradient
// PLAN: AllReduce
// PLAN: OuterStep (%{{[0-9]+}}) -> () queue Compute lr 0.7 momentum 0.9 nesterov replicas 4 gap_penalty 1 clip 0 variable #{{[0-9]+}} anchor #{{[0-9]+}} buffer #{{[0-9]+}}

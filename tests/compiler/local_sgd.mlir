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
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=co2:8 | FileCheck %s --check-prefix=CO2
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=co2:8 | sbpflow-opt | FileCheck %s --check-prefix=CO2
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=co2:8 staleness=0 gap-penalty=2 outer-clip=0.5" | FileCheck %s --check-prefix=CO2NOW
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=co2:8 --sbp-bucket-gradients --sbp-plan-memory --sbp-emit-plan=print=true | FileCheck %s --check-prefix=CO2PLAN
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=sparseloco:15 sparseloco-topk=16 sparseloco-chunk=1024 error-decay=0.5" --sbp-bucket-gradients | FileCheck %s --check-prefix=SPARSE
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=sparseloco:15 sparseloco-topk=16 sparseloco-chunk=1024 error-decay=0.5" | sbpflow-opt | FileCheck %s --check-prefix=SPARSE
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="sync=sparseloco:15" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=SPARSEPLAN
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=sparseloco:15 sparseloco-average=senders" | sbpflow-opt | FileCheck %s --check-prefix=SENDERS
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=edit:6 edit-temperature=0.5 pseudo-grad-clip=2" --sbp-bucket-gradients | FileCheck %s --check-prefix=EDIT
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=edit:6 edit-temperature=0.5 pseudo-grad-clip=2" | sbpflow-opt | FileCheck %s --check-prefix=EDIT
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="sync=edit:6" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=EDITPLAN

// Parameters and SGD's momentum are per replica; the anchor starts as the
// parameter (same init and seed), the outer momentum at zero.
// DILOCO-DAG: sbp.variable @fc1.weight : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17 {replica_dim = 0 : i64}
// DILOCO-DAG: sbp.variable @fc1.weight.outer_anchor : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17{{$}}
// DILOCO-DAG: sbp.variable @fc1.weight.outer_momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0{{$}}
// DILOCO-DAG: sbp.variable @fc1.weight.momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0 {replica_dim = 0 : i64}
// DILOCO-DAG: sbp.variable @fc2.bias : tensor<10xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 20 {replica_dim = 0 : i64}
// DILOCO: sbp.schedule "diloco" @train every 10 then ["run @outer"]
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
// PLAIN: sbp.schedule "diloco" @train every 1 then ["run @outer"]
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
// PLAN: schedule diloco: train x10, then run outer
// PLAN-LABEL: program train
// PLAN: Scale (%{{[0-9]+}}) -> (%{{[0-9]+}}) queue Compute factor 4
// PLAN-NOT: AllReduce
// PLAN-LABEL: program outer
// PLAN: PseudoGradient
// PLAN: AllReduce
// PLAN: OuterStep (%{{[0-9]+}}) -> () queue Compute lr 0.7 momentum 0.9 nesterov replicas 4 gap_penalty 1 clip 0 variable #{{[0-9]+}} anchor #{{[0-9]+}} buffer #{{[0-9]+}}

// Under CO2 the round's pseudo-gradient is kept per replica (outer_delta), the
// exchange (started in the background, one round stale) sums it and
// computes the next anchor without touching the anchor, the adoption makes
// it the anchor and merges it into the parameters, keeping the progress
// made since the send: next + ((param - anchor) + delta).
// CO2-DAG: sbp.variable @fc1.weight.outer_anchor : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17{{$}}
// CO2-DAG: sbp.variable @fc1.weight.outer_next : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17{{$}}
// CO2-DAG: sbp.variable @fc1.weight.outer_momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0{{$}}
// CO2-DAG: sbp.variable @fc1.weight.outer_delta : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0 {replica_dim = 0 : i64}
// CO2: sbp.schedule "co2" @train every 8 then ["join", "run @outer_adopt", "run @outer_send", "start @outer_exchange"]
// CO2-LABEL: func.func @outer_send
// CO2: %[[A:.*]] = sbp.parameter @fc1.weight.outer_anchor
// CO2: %[[W:.*]] = sbp.parameter @fc1.weight :
// CO2: %[[D:.*]] = sbp.pseudo_gradient %[[A]], %[[W]]
// CO2: sbp.assign %[[D]] {variable = @fc1.weight.outer_delta} : tensor<784x64xf32, #sbp.t<@dp, [P(sum)]>>
// CO2-LABEL: func.func @outer_exchange
// CO2: %[[T:.*]] = sbp.parameter @fc1.weight.outer_delta : tensor<784x64xf32, #sbp.t<@dp, [P(sum)]>>
// CO2: %[[S:.*]] = sbp.all_reduce %[[T]] {dim = 0 : i64}
// CO2: sbp.outer_step %[[S]] {anchor = @fc1.weight.outer_anchor, clip = 0.000000e+00 : f32, gap_penalty = 1.000000e+00 : f32, keep_anchor = true, lr = 1.000000e+00 : f32, momentum = 5.000000e-01 : f32, momentum_buffer = @fc1.weight.outer_momentum, nesterov = false, replicas = 4 : i64, variable = @fc1.weight.outer_next}
// CO2-LABEL: func.func @outer_adopt
// CO2: %[[N:.*]] = sbp.parameter @fc1.weight.outer_next
// CO2: %[[PA:.*]] = sbp.parameter @fc1.weight.outer_anchor
// CO2: %[[PW:.*]] = sbp.parameter @fc1.weight :
// CO2: %[[PD:.*]] = sbp.parameter @fc1.weight.outer_delta :
// CO2: %[[PR:.*]] = sbp.pseudo_gradient %[[PW]], %[[PA]] {dim = 0 : i64} : (tensor<784x64xf32, #sbp.t<@dp, [B]>>, tensor<784x64xf32, #sbp.t<@dp, [B]>>) -> tensor<784x64xf32, #sbp.t<@dp, [B]>>
// CO2: %[[SINCE:.*]] = sbp.add %[[PR]], %[[PD]]
// CO2: %[[MERGED:.*]] = sbp.add %[[N]], %[[SINCE]]
// CO2: sbp.assign %[[MERGED]] {variable = @fc1.weight}
// CO2: sbp.assign %[[N]] {variable = @fc1.weight.outer_anchor}

// Staleness 0: the exchange is joined before the adoption; the gap penalty
// and the momentum clipping reach the outer step.
// CO2NOW: sbp.schedule "co2" @train every 8 then ["run @outer_send", "start @outer_exchange", "join", "run @outer_adopt"]
// CO2NOW: sbp.outer_step {{.*}}clip = 5.000000e-01 : f32, gap_penalty = 2.000000e+00 : f32, keep_anchor = true

// The plan: the exchange's all-reduces in one bucket, the schedule's steps.
// CO2PLAN: schedule co2: train x8, then join, run outer_adopt, run outer_send, start outer_exchange
// CO2PLAN-LABEL: program outer_send
// CO2PLAN: Assign
// CO2PLAN-LABEL: program outer_exchange
// CO2PLAN-COUNT-1: AllReduce
// CO2PLAN-NOT: AllReduce
// CO2PLAN: OuterStep {{.*}} keep_anchor

// SparseLoCo: DiLoCo's @outer without an outer momentum; each
// pseudo-gradient's all-reduce carries the chunked 2-bit top-k codec
// (16 / 1024 = 0.015625), its residual one row per rank (the error
// feedback), and travels alone (no bucket).
// SPARSE-DAG: sbp.variable @fc1.weight.codec.residual : tensor<4x50176xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 0{{$}}
// SPARSE-DAG: sbp.variable @fc1.weight.codec.step : tensor<i32, #sbp.t<@dp, [B]>>
// SPARSE-DAG: sbp.variable @fc1.weight.outer_anchor : tensor<784x64xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -3.570000e-02, 3.570000e-02> seed 17{{$}}
// SPARSE-NOT: outer_momentum
// SPARSE: sbp.schedule "sparseloco" @train every 15 then ["run @outer"]
// SPARSE-LABEL: func.func @outer
// SPARSE: %[[D:.*]] = sbp.pseudo_gradient %{{.*}}, %{{.*}} {dim = 0 : i64} : {{.*}} -> tensor<10xf32, #sbp.t<@dp, [P(sum)]>>
// SPARSE: %[[S:.*]] = sbp.all_reduce %[[D]] {codec = #sbp.codec<topk2bit, density = 1.562500e-02, chunk = 1024, decay = 5.000000e-01>, dim = 0 : i64, state = [@fc2.bias.codec.residual], step = @fc2.bias.codec.step} : (tensor<10xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<10xf32, #sbp.t<@dp, [B]>>
// SPARSE: sbp.outer_step %[[S]] {anchor = @fc2.bias.outer_anchor, clip = 0.000000e+00 : f32, gap_penalty = 1.000000e+00 : f32, lr = 1.000000e+00 : f32, momentum = 0.000000e+00 : f32, nesterov = false, replicas = 4 : i64, variable = @fc2.bias}
// SPARSE-COUNT-3: sbp.all_reduce %{{.*}} {codec = #sbp.codec<topk2bit, density = 1.562500e-02, chunk = 1024, decay = 5.000000e-01>
// SPARSE-NOT: sbp.all_reduce

// The plan: the codec's defaults (32 of 4096, decay 0.95) on each outer
// all-reduce.
// SPARSEPLAN: schedule sparseloco: train x15, then run outer
// SPARSEPLAN-LABEL: program outer
// SPARSEPLAN-COUNT-4: AllReduce {{.*}} codec TopK2Bit density 0.0078125 {{.*}} chunk 4096 decay 0.95
// SPARSEPLAN-NOT: AllReduce

// Averaged over its senders (CCLoco's), each value is already a mean: the
// outer step divides by one.
// SENDERS-LABEL: func.func @outer
// SENDERS: sbp.all_reduce %{{.*}} {codec = #sbp.codec<topk2bit, density = 7.812500e-03, chunk = 4096, decay = 0.94999999999999996, senders = 1>
// SENDERS-NEXT: sbp.outer_step {{.*}} replicas = 1 : i64

// EDiT: @train stays local; @train_sync (the first step of every round after
// the first) is @train with each parameter synchronised just before the op
// that first uses it: its pseudo-gradient, EDiT's weighted all-reduce
// (#sbp.codec<edit>, its anomaly detector's row per rank) and DiLoCo's outer
// step with the weights summing to one (replicas = 1); the forward reads the
// parameter after it, so each layer's exchange overlaps the layers before.
// EDIT-DAG: sbp.variable @fc1.weight.codec.anomaly : tensor<4x124xf32, #sbp.t<@dp, [S(0)]>>
// EDIT-DAG: sbp.variable @fc1.weight.outer_momentum : tensor<784x64xf32, #sbp.t<@dp, [B]>>
// EDIT: sbp.schedule "edit" @train every 6 then ["inner @train_sync"]
// EDIT-LABEL: func.func @train()
// EDIT-NOT: sbp.all_reduce
// EDIT-LABEL: func.func @train_sync()
// EDIT: %[[A:.*]] = sbp.parameter @fc1.weight.outer_anchor
// EDIT-NEXT: %[[P:.*]] = sbp.parameter @fc1.weight :
// EDIT-NEXT: %[[D:.*]] = sbp.pseudo_gradient %[[A]], %[[P]] {dim = 0 : i64}
// EDIT-NEXT: %[[S:.*]] = sbp.all_reduce %[[D]] {codec = #sbp.codec<edit, clip = 2.000000e+00, temperature = 5.000000e-01>, dim = 0 : i64, state = [@fc1.weight.codec.anomaly], step = @fc1.weight.codec.step}
// EDIT-NEXT: sbp.outer_step %[[S]] {anchor = @fc1.weight.outer_anchor, {{.*}} momentum = 0.899999976 : f32, momentum_buffer = @fc1.weight.outer_momentum, nesterov = true, replicas = 1 : i64, variable = @fc1.weight}
// EDIT-NEXT: %[[W:.*]] = sbp.parameter @fc1.weight :
// EDIT-NEXT: sbp.matmul %{{.*}}, %[[W]]
// EDIT: sbp.outer_step {{.*}} variable = @fc2.bias}
// EDIT-NEXT: %[[B:.*]] = sbp.parameter @fc2.bias :
// EDIT-NEXT: sbp.bias_add %{{.*}}, %[[B]]

// The plan: the substitute step, and the forward's read of each parameter
// waits for its outer step (a control register, read after write).
// EDITPLAN: schedule edit: train x6, then inner train_sync
// EDITPLAN-LABEL: program train_sync
// EDITPLAN: [[OS:[0-9]+]] sbp.outer_step{{.*}} OuterStep {{.*}} replicas 1
// EDITPLAN-NEXT: [[READ:[0-9]+]] sbp.parameter{{.*}} Parameter
// EDITPLAN: task [[OS]] -> [{{([0-9]+,)*}}[[READ]]{{[],]}}{{.*}} control

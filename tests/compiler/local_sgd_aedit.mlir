// sbp-local-sgd with --sync aedit:SECONDS (A-EDiT): EDiT's @train_sync and
// edit codec, the schedule's rounds timed (period 0, seconds, min_steps);
// with aedit-step-weight the codec names the parameter's AdamW step as its
// inner_steps; on a [replica, tp] mesh too. Refused: step weights without
// AdamW, a bad SECONDS or ratio.
// RUN: sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=aedit:2.5 aedit-min-steps=40 aedit-step-weight=0.5" | FileCheck %s
// RUN: sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=aedit:2.5 aedit-min-steps=40 aedit-step-weight=0.5" | sbpflow-opt | FileCheck %s
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=aedit:0.5 | FileCheck %s --check-prefix=EQUAL
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-compile="sync=aedit:0.5" --sbp-emit-plan=print=true | FileCheck %s --check-prefix=PLAN
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing "--sbp-local-sgd=sync=aedit:0.5 aedit-step-weight=0.5" 2>&1 | FileCheck %s --check-prefix=SGD
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate=replica-dim=0 --sbp-insert-boxing --sbp-local-sgd=sync=aedit:1 | FileCheck %s --check-prefix=MESH
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-local-sgd=sync=aedit:0 2>&1 | FileCheck %s --check-prefix=SECONDS
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-local-sgd=sync=aedit:soon 2>&1 | FileCheck %s --check-prefix=SECONDS
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=aedit:1 aedit-step-weight=2" 2>&1 | FileCheck %s --check-prefix=RATIO

// CHECK-LABEL: module @adamw_dp
// CHECK-DAG: sbp.variable @w.adam_step : tensor<i32, #sbp.t<@dp, [B]>> {{.*}}replica_dim = 0
// CHECK-DAG: sbp.variable @w.codec.anomaly : tensor<2x124xf32, #sbp.t<@dp, [S(0)]>>
// CHECK: sbp.schedule "aedit" @train every 0 then ["inner @train_sync"] {min_steps = 40 : i64, seconds = 2.500000e+00 : f64}
// CHECK-LABEL: func.func @train_sync()
// CHECK: %[[D:.*]] = sbp.pseudo_gradient
// CHECK-NEXT: sbp.all_reduce %[[D]] {codec = #sbp.codec<edit, step_weight = 5.000000e-01>, dim = 0 : i64, inner_steps = @w.adam_step, state = [@w.codec.anomaly], step = @w.codec.step}
// CHECK: sbp.adamw {{.*}}step = @w.adam_step
module @adamw_dp {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x3xf32, #sbp.t<@dp, [B]>>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %z, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.adamw<lr = 0.01, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// EQUAL: sbp.schedule "aedit" @train every 0 then ["inner @train_sync"] {min_steps = 100 : i64, seconds = 5.000000e-01 : f64}
// EQUAL: sbp.all_reduce {{.*}}codec = #sbp.codec<edit>, dim = 0 : i64, state
// PLAN: schedule aedit: train for 0.5 s (at least 100 steps in all), then inner train_sync
// SGD: error: 'sbp.sgd' op updates @{{.*}} without AdamW; A-EDiT's step weights count a replica's inner steps by AdamW's step (--aedit-step-weight 0 turns them off)
// MESH: sbp.schedule "aedit" @train every 0 then ["inner @train_sync"] {min_steps = 100 : i64, seconds = 1.000000e+00 : f64}
// MESH: func.func @train_sync()
// SECONDS: error: --sync 'aedit:{{.*}}': SECONDS, the wall-clock time between synchronisations, must be a positive number
// RATIO: error: --aedit-min-steps 100 --aedit-step-weight 2.000000e+00: need min steps >= 0 and a ratio in [0, 1]

// gather_rows and scatter_rows (ops/Embedding.cpp): each the other's
// gradient (none for the indices); with the edges split S(0) a gather stays
// split and a scatter is a partial sum of the result, so a message-passing
// layer's aggregation is one all-reduce; they reach the plan as GatherRows
// and ScatterRows.
// RUN: sbpflow-opt %s --sbp-autodiff | FileCheck %s --check-prefix=GRAD
// RUN: sbpflow-opt %s --sbp-autodiff --sbp-propagate --sbp-insert-boxing | FileCheck %s --check-prefix=SBP
// RUN: sbpflow-opt %s --sbp-compile --sbp-emit-plan=print=true -o /dev/null | FileCheck %s --check-prefix=PLAN

// GRAD: %[[SRC:.*]] = sbp.input "src"
// GRAD: %[[DST:.*]] = sbp.input "dst"
// GRAD: %[[M:.*]] = sbp.gather_rows %{{.*}}, %[[SRC]] : {{.*}} -> tensor<10x3xf32>
// GRAD: %[[H:.*]] = sbp.scatter_rows %[[M]], %[[DST]] : {{.*}} -> tensor<6x3xf32>
// GRAD: %[[DH:.*]] = sbp.softmax_xent_grad
// GRAD: %[[DM:.*]] = sbp.gather_rows %[[DH]], %[[DST]] : (tensor<6x3xf32>, tensor<10xi32{{.*}}>) -> tensor<10x3xf32>
// GRAD: %[[DW:.*]] = sbp.scatter_rows %[[DM]], %[[SRC]] : (tensor<10x3xf32>, tensor<10xi32{{.*}}>) -> tensor<6x3xf32>
// GRAD: sbp.sgd %[[DW]] {{.*}}variable = @w

// SBP: sbp.gather_rows {{.*}} -> tensor<10x3xf32, #sbp.t<@dp, [S(0)]>>
// SBP: sbp.scatter_rows {{.*}} -> tensor<6x3xf32, #sbp.t<@dp, [P(sum)]>>
// SBP: sbp.reduce_scatter {{.*}} -> tensor<6x3xf32, #sbp.t<@dp, [S(0)]>>
// SBP: sbp.all_gather {{.*}} -> tensor<6x3xf32, #sbp.t<@dp, [B]>>
// SBP: sbp.gather_rows {{.*}} -> tensor<10x3xf32, #sbp.t<@dp, [S(0)]>>
// SBP: sbp.scatter_rows {{.*}} -> tensor<6x3xf32, #sbp.t<@dp, [P(sum)]>>
// SBP: sbp.all_reduce {{.*}} -> tensor<6x3xf32, #sbp.t<@dp, [B]>>
// SBP: sbp.sgd {{.*}} : tensor<6x3xf32, #sbp.t<@dp, [B]>>

// PLAN: sbp.gather_rows@{{.*}} GatherRows (%2, %0) -> (%3)
// PLAN: sbp.scatter_rows@{{.*}} ScatterRows (%3, %1) -> (%4)
// PLAN: sbp.gather_rows@{{.*}} GatherRows
// PLAN: sbp.scatter_rows@{{.*}} ScatterRows
module @gnn {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<6x3xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 7
  func.func @train() {
    %src = sbp.input "src" : tensor<10xi32, #sbp.t<@dp, [S(0)]>>
    %dst = sbp.input "dst" : tensor<10xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<6x3xf32, #sbp.t<@dp, [B]>>
    %m = sbp.gather_rows %w, %src : (tensor<6x3xf32, #sbp.t<@dp, [B]>>, tensor<10xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<10x3xf32>
    %h = sbp.scatter_rows %m, %dst : (tensor<10x3xf32>, tensor<10xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<6x3xf32>
    %y = sbp.input "label" : tensor<6xi32, #sbp.t<@dp, [B]>>
    %l = sbp.softmax_xent %h, %y : (tensor<6x3xf32>, tensor<6xi32, #sbp.t<@dp, [B]>>) -> tensor<6xf32>
    %loss = sbp.mean %l : (tensor<6xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

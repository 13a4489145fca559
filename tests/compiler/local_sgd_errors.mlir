// sbp-local-sgd refuses what it cannot make local: a bad --sync spec or
// SparseLoCo setting, one
// replica, a compressed parameter, a variable split across replicas, a
// replica dimension outside the hierarchy.
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-local-sgd=sync=diloco:0 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-local-sgd=sync=gossip:3 2>&1 | FileCheck %s --check-prefix=NAME
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-local-sgd=sync=diloco 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=diloco:5 outer-momentum=1" 2>&1 | FileCheck %s --check-prefix=MOMENTUM
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=co2:5 staleness=2" 2>&1 | FileCheck %s --check-prefix=STALE
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=co2:5 outer-momentum=0 outer-clip=1" 2>&1 | FileCheck %s --check-prefix=CLIP
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=sparseloco:5 outer-momentum=0.9" 2>&1 | FileCheck %s --check-prefix=SPARSEMOMENTUM
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=sparseloco:5 sparseloco-topk=64 sparseloco-chunk=32" 2>&1 | FileCheck %s --check-prefix=SPARSECHUNK
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=sparseloco:5 sparseloco-chunk=70000" 2>&1 | FileCheck %s --check-prefix=SPARSECHUNK
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=sparseloco:5 error-decay=0" 2>&1 | FileCheck %s --check-prefix=SPARSEDECAY
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=sparseloco:5 sparseloco-average=some" 2>&1 | FileCheck %s --check-prefix=AVERAGE
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=diloco:5 edit-temperature=1" 2>&1 | FileCheck %s --check-prefix=EDITONLY
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir "--sbp-local-sgd=sync=edit:5 pseudo-grad-clip=-1" 2>&1 | FileCheck %s --check-prefix=EDITNEG
// RUN: not sbpflow-opt %s --split-input-file --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:5 2>&1 | FileCheck %s

// ZERO: error: --sync 'diloco{{.*}}': H, the inner steps between synchronisations, must be a positive integer
// NAME: error: --sync 'gossip:3': expected ddp, diloco:H, co2:H, sparseloco:H, edit:H or aedit:SECONDS
// AVERAGE: error: --sparseloco-average 'some': replicas (the paper's mean) or senders (each value's mean over the replicas that sent it, as CCLoco)
// EDITONLY: error: --edit-temperature and --pseudo-grad-clip are EDiT's (--sync edit:H or aedit:SECONDS)
// EDITNEG: error: --edit-temperature 0.000000e+00 --pseudo-grad-clip -1.000000e+00: neither may be negative
// SPARSEMOMENTUM: error: --sync sparseloco: error feedback replaces the outer momentum; --outer-momentum 9.000000e-01 has no place
// SPARSECHUNK: error: --sparseloco-chunk {{[0-9]+}} --sparseloco-topk {{[0-9]+}}: need 1 <= topk <= chunk <= 65536
// SPARSEDECAY: error: --error-decay 0.000000e+00 must lie in (0, 1]
// STALE: error: --co2-staleness 2: 0 or 1 rounds
// CLIP: error: --outer-clip clips the outer momentum; --outer-momentum is 0
// MOMENTUM: error: --outer-momentum 1.000000e+00 must lie in [0, 1)

// CHECK: error: --sync diloco: placement @one has 1 replica on its first hierarchy dimension; local SGD needs at least 2
module @one_replica {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<8x4xf32, #sbp.t<@one, [B]>> init #sbp.init<zeros> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<16x8xf32, #sbp.t<@one, [S(0)]>>
    %w = sbp.parameter @w : tensor<8x4xf32, #sbp.t<@one, [B]>>
    %y = sbp.matmul %x, %w : (tensor<16x8xf32, #sbp.t<@one, [S(0)]>>, tensor<8x4xf32, #sbp.t<@one, [B]>>) -> tensor<16x4xf32>
    %s = sbp.mean %y : (tensor<16x4xf32>) -> tensor<f32>
    sbp.minimize %s {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// CHECK: error: 'sbp.variable' op has a compress spec; local SGD exchanges no gradients to compress
module @compressed {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<8x4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1 {compress = "topk:0.1"}
  func.func @train() {
    %x = sbp.input "x" : tensor<16x8xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<8x4xf32, #sbp.t<@dp, [B]>>
    %y = sbp.matmul %x, %w : (tensor<16x8xf32, #sbp.t<@dp, [S(0)]>>, tensor<8x4xf32, #sbp.t<@dp, [B]>>) -> tensor<16x4xf32>
    %s = sbp.mean %y : (tensor<16x4xf32>) -> tensor<f32>
    sbp.minimize %s {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// CHECK: error: 'sbp.variable' op is S(0) on the replica dimension (dim 0); local SGD needs every replica to hold it whole
module @split {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 1
  func.func @train() {
    %x = sbp.input "x" : tensor<16x8xf32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.matmul %x, %w : (tensor<16x8xf32, #sbp.t<@dp, [S(0)]>>, tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<16x4xf32>
    %s = sbp.mean %y : (tensor<16x4xf32>) -> tensor<f32>
    sbp.minimize %s {optimizer = #sbp.sgd<lr = 0.1, momentum = 0.0, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// -----

// CHECK: error: 'sbp.variable' op replica_dim 1 is outside the hierarchy of its placement @dp
module @replica_dim {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<8x4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 1 {replica_dim = 1 : i64}
}

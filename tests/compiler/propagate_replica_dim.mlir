// sbp-propagate with replica-dim (what the pipeline sets under --sync):
// across local SGD's replica dimension a value may only be summed (P -> B,
// which sbp-local-sgd turns into each replica's own estimate) or changed
// locally. The GPT on the [2, 2] mesh reduce-scatters its clipped
// gradients' square sums across dim 0 when free to; with the option it
// sums them there instead, and sbp-local-sgd accepts the plan.
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing | FileCheck %s --check-prefix=FREE
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate=replica-dim=0 --sbp-insert-boxing | FileCheck %s --check-prefix=REPLICAS
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate=replica-dim=0 --sbp-insert-boxing | FileCheck %s --check-prefix=SUMS
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate=replica-dim=0 --sbp-insert-boxing --sbp-local-sgd=sync=diloco:4 | FileCheck %s --check-prefix=LOCAL
// RUN: not sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-local-sgd=sync=diloco:4 2>&1 | FileCheck %s --check-prefix=REFUSED

// FREE: sbp.reduce_scatter {{.*}}{dim = 0 : i64}
// REPLICAS-NOT: sbp.reduce_scatter {{.*}}{dim = 0 : i64}
// REPLICAS-NOT: sbp.all_gather {{.*}}{dim = 0 : i64}
// REPLICAS-NOT: sbp.all_to_all {{.*}}{dim = 0 : i64}
// SUMS: sbp.all_reduce {{.*}}{dim = 0 : i64}
// LOCAL: sbp.schedule "diloco" @train every 4
// LOCAL-LABEL: func.func @train()
// LOCAL: sbp.local_estimate
// LOCAL-NOT: sbp.all_reduce {{.*}}{dim = 0 : i64}
// LOCAL-LABEL: func.func @outer()
// REFUSED: error: 'sbp.reduce_scatter' op communicates across replicas (dim 0) in the training function; local SGD's inner step cannot

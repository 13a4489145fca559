// sbp-bucket-gradients: gradient all-reduces are fused into buckets in the
// order backward produces them, each issued right after its last gradient.
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-bucket-gradients=bucket-bytes=4096 | FileCheck %s
// RUN: sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-bucket-gradients | FileCheck %s --check-prefix=ONE
// RUN: sbpflow-opt %S/inputs/mlp_2d.mlir --sbp-autodiff --sbp-propagate --sbp-insert-boxing --sbp-bucket-gradients=bucket-bytes=4096 | FileCheck %s --check-prefix=TWOD
// RUN: not sbpflow-opt %S/inputs/mlp_dp.mlir --sbp-bucket-gradients=bucket-bytes=0 2>&1 | FileCheck %s --check-prefix=BAD

// fc2.bias (40 B), fc2.weight (2560 B) and fc1.bias (256 B) share a 4 KiB
// bucket issued before the last matmul of backward; fc1.weight (200 KB)
// travels alone at the end.
// CHECK: %[[DB2:.*]] = sbp.reduce_rows {{.*}} -> tensor<10xf32
// CHECK: %[[DW2:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<64x10xf32
// CHECK: sbp.relu_grad
// CHECK: %[[DB1:.*]] = sbp.reduce_rows {{.*}} -> tensor<64xf32
// CHECK-NEXT: %[[B1:.*]]:3 = sbp.all_reduce %[[DB2]], %[[DW2]], %[[DB1]] {dim = 0 : i64}
// CHECK-NEXT: %[[DW1:.*]] = sbp.matmul {{.*}}transpose_a = true{{.*}} -> tensor<784x64xf32
// CHECK-NEXT: %[[B2:.*]] = sbp.all_reduce %[[DW1]] {dim = 0 : i64}
// CHECK: sbp.sgd %[[B1]]#0 {{.*}}variable = @fc2.bias
// CHECK: sbp.sgd %[[B1]]#1 {{.*}}variable = @fc2.weight
// CHECK: sbp.sgd %[[B1]]#2 {{.*}}variable = @fc1.bias
// CHECK: sbp.sgd %[[B2]] {{.*}}variable = @fc1.weight

// With the default 1 MiB every gradient fits one bucket.
// ONE-COUNT-1: sbp.all_reduce
// ONE-NOT: sbp.all_reduce

// On a 2-D placement a gradient is reduced over dim 0, then dim 1; each
// dimension is bucketed, and the dim-1 bucket follows the dim-0 one.
// TWOD: %[[D0:.*]]:3 = sbp.all_reduce %{{.*}}, %{{.*}}, %{{.*}} {dim = 0 : i64}
// TWOD-NEXT: %[[D1:.*]]:3 = sbp.all_reduce %[[D0]]#0, %[[D0]]#1, %[[D0]]#2 {dim = 1 : i64}
// TWOD-NEXT: %[[DW1:.*]] = sbp.matmul {{.*}}transpose_a = true
// TWOD-NEXT: %[[E0:.*]] = sbp.all_reduce %[[DW1]] {dim = 0 : i64}
// TWOD-NEXT: %[[E1:.*]] = sbp.all_reduce %[[E0]] {dim = 1 : i64}
// TWOD: sbp.sgd %[[D1]]#0
// TWOD: sbp.sgd %[[E1]]

// BAD: error: sbp-bucket-gradients: bucket-bytes must be positive, got 0

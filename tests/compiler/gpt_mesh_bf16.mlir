// The GPT on a 2 x 2 [dp, tp] mesh under mixed precision compiles (it did
// not: the greedy first propagation split a bias cast on both dimensions,
// from which no order of straight single-dimension steps reaches the fused
// bias + GELU's signatures; planNdBoxing's detour makes that first solution
// valid, and the local search then finds one that needs none), and the
// gradient buckets keep every optimiser after the clipping scale it reads.
// RUN: sbpflow-opt %S/inputs/gpt_mesh.mlir --sbp-compile=bf16=true | FileCheck %s

// CHECK: sbp.bias_gelu {{.*}}: (tensor<12x64x512xbf16, #sbp.t<@mesh, [S(0), S(2)]>>, tensor<512xbf16, #sbp.t<@mesh, [B, S(0)]>>)
// CHECK: %[[SCALE:.*]] = sbp.clip_scale
// CHECK-NOT: sbp.clip_scale
// CHECK-COUNT-21: sbp.adamw {{.*}}, %[[SCALE]]
// CHECK-NOT: sbp.adamw

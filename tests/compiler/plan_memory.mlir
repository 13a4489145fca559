// sbp-plan-memory: arena offsets from lifetimes in op order, 64-byte aligned,
// best-fit reuse; an all-reduce result aliases its operand when nothing else
// reads it; parameters are variable views (-1).
// RUN: sbpflow-opt %s --sbp-plan-memory | FileCheck %s

// %a and %b die at %c, so %d takes the best-fitting hole at 0; %e (256 B)
// does not fit the 64-byte hole that %d leaves and goes after the mean; the
// all-reduce works in place and keeps the mean's bytes alive until the metric.

// CHECK-LABEL: func.func @chain() attributes {sbp.arena_bytes = 640 : i64}
// CHECK: sbp.input "a" {sbp.offset = array<i64: 0>}
// CHECK: sbp.parameter @v {sbp.offset = array<i64: -1>}
// CHECK: sbp.relu %{{.*}} {sbp.offset = array<i64: 64>}
// CHECK: sbp.add %{{.*}} {sbp.offset = array<i64: 128>}
// CHECK: sbp.relu %{{.*}} {sbp.offset = array<i64: 0>}
// CHECK: sbp.mean %{{.*}} {sbp.offset = array<i64: 64>}
// CHECK: sbp.input "e" {sbp.offset = array<i64: 128>}
// CHECK: sbp.all_reduce %{{.*}} {dim = 0 : i64, sbp.offset = array<i64: 64>}
// CHECK: sbp.relu %{{.*}} {sbp.offset = array<i64: 384>}

module {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @v : tensor<16xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros, 0.0, 0.0> seed 1
  func.func @chain() {
    // 16 f32 split in two: 32 bytes per rank, one 64-byte slot.
    %a = sbp.input "a" : tensor<16xf32, #sbp.t<@dp, [S(0)]>>
    %v = sbp.parameter @v : tensor<16xf32, #sbp.t<@dp, [B]>>
    %b = sbp.relu %a : (tensor<16xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<16xf32, #sbp.t<@dp, [S(0)]>>
    %c = sbp.add %a, %b : (tensor<16xf32, #sbp.t<@dp, [S(0)]>>, tensor<16xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<16xf32, #sbp.t<@dp, [S(0)]>>
    %d = sbp.relu %c : (tensor<16xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<16xf32, #sbp.t<@dp, [S(0)]>>
    %m = sbp.mean %d : (tensor<16xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<f32, #sbp.t<@dp, [P(sum)]>>
    %e = sbp.input "e" : tensor<64xf32, #sbp.t<@dp, [B]>>
    %r = sbp.all_reduce %m {dim = 0 : i64} : (tensor<f32, #sbp.t<@dp, [P(sum)]>>) -> tensor<f32, #sbp.t<@dp, [B]>>
    sbp.metric "m" %r : tensor<f32, #sbp.t<@dp, [B]>>
    %f = sbp.relu %e : (tensor<64xf32, #sbp.t<@dp, [B]>>) -> tensor<64xf32, #sbp.t<@dp, [B]>>
    return
  }

  // An all-reduce whose operand has another reader works out of place: the
  // square-sum after it must still read the unreduced partial sums, so %p keeps
  // its own bytes (0, free again after the unused input %g) and the all-reduce
  // result gets new ones (64). (%p comes from a variable: an input is never
  // partial.)
  // CHECK-LABEL: func.func @shared_operand()
  // CHECK: sbp.input "g" {sbp.offset = array<i64: 0>}
  // CHECK: sbp.all_reduce %{{.*}} {dim = 0 : i64, sbp.offset = array<i64: 64>}
  // CHECK: sbp.square_sum %{{.*}} {sbp.offset = array<i64: 128>}
  func.func @shared_operand() {
    %g = sbp.input "g" : tensor<8xf32, #sbp.t<@dp, [B]>>
    %v = sbp.parameter @v : tensor<16xf32, #sbp.t<@dp, [B]>>
    %p = sbp.zero_others %v {dim = 0 : i64} : (tensor<16xf32, #sbp.t<@dp, [B]>>) -> tensor<16xf32, #sbp.t<@dp, [P(sum)]>>
    %r = sbp.all_reduce %p {dim = 0 : i64} : (tensor<16xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<16xf32, #sbp.t<@dp, [B]>>
    %s = sbp.square_sum %p : (tensor<16xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<f32, #sbp.t<@dp, [P(sum)]>>
    sbp.output "r" %r : tensor<16xf32, #sbp.t<@dp, [B]>>
    sbp.metric "s" %s : tensor<f32, #sbp.t<@dp, [P(sum)]>>
    return
  }
}

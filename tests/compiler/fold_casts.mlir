// sbp-fold-casts: a bf16 matmul or reduce_rows whose only use widens it to
// f32 produces the f32 result itself (its accumulation is f32 anyway). A
// producer with other uses, or a narrowing cast, is left alone.
// RUN: sbpflow-opt %s --sbp-fold-casts | FileCheck %s

// CHECK-LABEL: func.func @train
// CHECK: %[[DW:.*]] = sbp.matmul %{{.*}}, %{{.*}} {transpose_a = true} : ({{.*}}) -> tensor<4x3xf32>
// CHECK-NEXT: %[[DB:.*]] = sbp.reduce_rows %{{.*}} : ({{.*}}) -> tensor<3xf32>
// CHECK-NEXT: %[[TWO:.*]] = sbp.matmul %{{.*}}, %{{.*}} : ({{.*}}) -> tensor<8x3xbf16>
// CHECK-NEXT: %[[TWOF:.*]] = sbp.cast %[[TWO]] : (tensor<8x3xbf16>) -> tensor<8x3xf32>
// CHECK-NEXT: %[[NARROW:.*]] = sbp.cast %[[DW]] : (tensor<4x3xf32>) -> tensor<4x3xbf16>
// CHECK-NEXT: sbp.output "dw" %[[DW]]
// CHECK-NEXT: sbp.output "db" %[[DB]]
// CHECK-NEXT: sbp.output "two" %[[TWOF]]
// CHECK-NEXT: sbp.output "two_again" %[[TWO]]
// CHECK-NEXT: sbp.output "narrow" %[[NARROW]]
module @fold {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xbf16, #sbp.t<@one, [B]>>
    %w = sbp.input "w" : tensor<4x3xbf16, #sbp.t<@one, [B]>>
    %dy = sbp.input "dy" : tensor<8x3xbf16, #sbp.t<@one, [B]>>
    %dw = sbp.matmul %x, %dy {transpose_a = true} : (tensor<8x4xbf16, #sbp.t<@one, [B]>>, tensor<8x3xbf16, #sbp.t<@one, [B]>>) -> tensor<4x3xbf16>
    %dwf = sbp.cast %dw : (tensor<4x3xbf16>) -> tensor<4x3xf32>
    %db = sbp.reduce_rows %dy : (tensor<8x3xbf16, #sbp.t<@one, [B]>>) -> tensor<3xbf16>
    %dbf = sbp.cast %db : (tensor<3xbf16>) -> tensor<3xf32>
    %two = sbp.matmul %x, %w : (tensor<8x4xbf16, #sbp.t<@one, [B]>>, tensor<4x3xbf16, #sbp.t<@one, [B]>>) -> tensor<8x3xbf16>
    %twof = sbp.cast %two : (tensor<8x3xbf16>) -> tensor<8x3xf32>
    %narrow = sbp.cast %dwf : (tensor<4x3xf32>) -> tensor<4x3xbf16>
    sbp.output "dw" %dwf : tensor<4x3xf32>
    sbp.output "db" %dbf : tensor<3xf32>
    sbp.output "two" %twof : tensor<8x3xf32>
    sbp.output "two_again" %two : tensor<8x3xbf16>
    sbp.output "narrow" %narrow : tensor<4x3xbf16>
    return
  }
}

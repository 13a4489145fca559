// An op whose SBPs match none of its signatures fails at compile time, naming
// the op, its inputs' SBPs and every signature it supports.
// RUN: not sbpflow-opt %s --split-input-file --sbp-propagate 2>&1 | FileCheck %s
// RUN: not sbpflow-opt %s --split-input-file --sbp-verify-boxing 2>&1 | FileCheck %s --check-prefix=VERIFY

// A relu whose result the user fixed to P(sum): relu is not linear.
// CHECK: no_signature.mlir{{.*}}: error: 'sbp.relu' op has no SBP signature for inputs S(0) on hierarchy dim 0: no signature produces the result SBP fixed in its type; supported signatures: S(0) -> S(0); S(1) -> S(1); B -> B
// VERIFY: no_signature.mlir{{.*}}: error: 'sbp.relu' op has no SBP signature for inputs S(0) on hierarchy dim 0: result P(sum) would need an implicit redistribution; supported signatures: S(0) -> S(0); S(1) -> S(1); B -> B
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @relu_to_partial() {
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
  %b = sbp.relu %a : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [P(sum)]>>
  return
}

// -----

// A fully annotated matmul S(0) x S(0) -> S(0) is an implicit redistribution.
// VERIFY: no_signature.mlir{{.*}}: error: 'sbp.matmul' op has no SBP signature for inputs S(0) x S(0) on hierarchy dim 0: result S(0) would need an implicit redistribution; supported signatures: S(0) x B -> S(0); B x S(1) -> S(1); S(1) x S(0) -> P(sum); B x B -> B; P(sum) x B -> P(sum); B x P(sum) -> P(sum)
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @matmul() {
  %a = sbp.input "a" : tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
  %w = sbp.input "w" : tensor<4x4xf32, #sbp.t<@dp, [S(0)]>>
  %y = sbp.matmul %a, %w : (tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>, tensor<4x4xf32, #sbp.t<@dp, [S(0)]>>) -> tensor<8x4xf32, #sbp.t<@dp, [S(0)]>>
  return
}

// -----

// Partial max cannot become partial sum.
// CHECK: no_signature.mlir{{.*}}: error: 'sbp.add' op has no SBP signature for inputs P(max) x P(max) on hierarchy dim 0: no signature produces the result SBP fixed in its type; supported signatures: S(0) x S(0) -> S(0); B x B -> B; P(sum) x P(sum) -> P(sum)
sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
func.func @partial_max() {
  %a = sbp.input "a" : tensor<8xf32, #sbp.t<@dp, [B]>>
  %m = sbp.zero_others %a {dim = 0 : i64} : (tensor<8xf32, #sbp.t<@dp, [B]>>) -> tensor<8xf32, #sbp.t<@dp, [P(max)]>>
  %y = sbp.add %m, %m : (tensor<8xf32, #sbp.t<@dp, [P(max)]>>, tensor<8xf32, #sbp.t<@dp, [P(max)]>>) -> tensor<8xf32, #sbp.t<@dp, [P(max)]>>
  return
}

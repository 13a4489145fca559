// Verifier errors of gather_rows and scatter_rows, each at the offending op.
// RUN: sbpflow-opt %s --split-input-file --verify-diagnostics

func.func @f() {
  %x = sbp.input "x" : tensor<6x3xf32>
  %i = sbp.input "i" : tensor<10xf32>
  // expected-error @+1 {{'sbp.gather_rows' op idx must have element type i32, got 'f32'; gather_rows needs i32 idx}}
  %y = sbp.gather_rows %x, %i : (tensor<6x3xf32>, tensor<10xf32>) -> tensor<10x3xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<6x3x2xf32>
  %i = sbp.input "i" : tensor<10xi32>
  // expected-error @+1 {{'sbp.gather_rows' op x must have rank 2, got 'tensor<6x3x2xf32>'}}
  %y = sbp.gather_rows %x, %i : (tensor<6x3x2xf32>, tensor<10xi32>) -> tensor<10x3xf32>
  return
}

// -----

func.func @f() {
  %x = sbp.input "x" : tensor<6x3xf32>
  %i = sbp.input "i" : tensor<10xi32>
  // expected-error @+1 {{'sbp.gather_rows' op result #0 has type 'tensor<9x3xf32>' but the operands give 'tensor<10x3xf32>'}}
  %y = sbp.gather_rows %x, %i : (tensor<6x3xf32>, tensor<10xi32>) -> tensor<9x3xf32>
  return
}

// -----

func.func @f() {
  %y = sbp.input "y" : tensor<10x3xf32>
  %i = sbp.input "i" : tensor<9xi32>
  // expected-error @+1 {{'sbp.scatter_rows' op idx holds 9 rows for the 10 rows of y}}
  %x = sbp.scatter_rows %y, %i : (tensor<10x3xf32>, tensor<9xi32>) -> tensor<6x3xf32>
  return
}

// -----

func.func @f() {
  %y = sbp.input "y" : tensor<10x3xf32>
  %i = sbp.input "i" : tensor<10xi32>
  // expected-error @+1 {{'sbp.scatter_rows' op result must be [N, 3], got 'tensor<6x4xf32>'}}
  %x = sbp.scatter_rows %y, %i : (tensor<10x3xf32>, tensor<10xi32>) -> tensor<6x4xf32>
  return
}

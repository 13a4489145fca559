// sbp-emit-plan refuses what the plan cannot hold rather than truncating it:
// an attribute or a placement field wider than the plan's 32-bit field, an
// output the executors cannot hand to the caller.
// RUN: sbpflow-opt %s --split-input-file --sbp-compile --sbp-emit-plan=print=true -verify-diagnostics -o /dev/null

module @heads {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  func.func @eval() {
    %q = sbp.input "q" : tensor<1x1x4294967298xf32, #sbp.t<@one, [B]>>
    // expected-error @+1 {{heads 4294967298 does not fit the plan's 32-bit field}}
    %a = sbp.causal_attention %q, %q, %q {heads = 4294967298 : i64} : (tensor<1x1x4294967298xf32, #sbp.t<@one, [B]>>, tensor<1x1x4294967298xf32, #sbp.t<@one, [B]>>, tensor<1x1x4294967298xf32, #sbp.t<@one, [B]>>) -> tensor<1x1x4294967298xf32>
    sbp.output "a" %a : tensor<1x1x4294967298xf32>
    return
  }
}

// -----

// expected-error @+1 {{rank 4294967296 does not fit the plan's 32-bit field}}
sbp.placement @wide cpu ranks [4294967296] hierarchy [1]
func.func @eval() {
  %x = sbp.input "x" : tensor<2xf32, #sbp.t<@wide, [B]>>
  sbp.output "x" %x : tensor<2xf32, #sbp.t<@wide, [B]>>
  return
}

// -----

// The executors hand an output to the caller as floats: an i32 output would
// be read as f32 bits.
module @ids {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  func.func @eval() {
    %ids = sbp.input "ids" : tensor<4xi32, #sbp.t<@one, [B]>>
    // expected-error @+1 {{'sbp.output' op output 'ids' must be f32 in a plan, got 'i32'}}
    sbp.output "ids" %ids : tensor<4xi32, #sbp.t<@one, [B]>>
    return
  }
}

// The timed schedule's and A-EDiT codec's own checks: seconds with a
// period, and a codec with a step weight but no inner_steps variable.
// RUN: not sbpflow-opt %s --split-input-file 2>&1 | FileCheck %s

// A schedule with seconds but a period, and an all-reduce whose codec
// weighs steps without naming them.
// CHECK: error: 'sbp.schedule' op with seconds (timed rounds) needs seconds > 0, period 0 and min_steps >= 0, got seconds = 1.000000e+00, period = 3, min_steps = 0
// CHECK: error: 'sbp.all_reduce' op names inner_steps exactly when its codec has a step_weight (A-EDiT)
module @bad_schedule {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.schedule "aedit" @train every 3 then ["inner @train_sync"] {seconds = 1.0 : f64}
  func.func @train() {
    return
  }
  func.func @train_sync() {
    return
  }
}

// -----

module @bad_codec {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @d.codec.anomaly : tensor<2x124xf32, #sbp.t<@dp, [S(0)]>> init #sbp.init<zeros> seed 0
  sbp.variable @d.codec.step : tensor<i32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
  sbp.variable @d : tensor<4xf32, #sbp.t<@dp, [B]>> init #sbp.init<zeros> seed 0
  func.func @f() {
    %p = sbp.parameter @d : tensor<4xf32, #sbp.t<@dp, [P(sum)]>>
    %s = sbp.all_reduce %p {codec = #sbp.codec<edit, step_weight = 0.5>, dim = 0 : i64, state = [@d.codec.anomaly], step = @d.codec.step} : (tensor<4xf32, #sbp.t<@dp, [P(sum)]>>) -> tensor<4xf32, #sbp.t<@dp, [B]>>
    return
  }
}


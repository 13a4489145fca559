// A linear model trained on a one-rank placement whose input is annotated
// S(0): on a unit hierarchy dimension every SBP is the same data.
module @linear_one_rank {
  sbp.placement @one cpu ranks [0] hierarchy [1]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@one, [B]>> init #sbp.init<uniform, -0.5, 0.5> seed 7
  func.func @train() {
    %x = sbp.input "x" : tensor<8x4xf32, #sbp.t<@one, [S(0)]>>
    %y = sbp.input "y" : tensor<8xi32, #sbp.t<@one, [S(0)]>>
    %w = sbp.parameter @w : tensor<4x3xf32, #sbp.t<@one, [B]>>
    %z = sbp.matmul %x, %w : (tensor<8x4xf32, #sbp.t<@one, [S(0)]>>, tensor<4x3xf32, #sbp.t<@one, [B]>>) -> tensor<8x3xf32>
    %l = sbp.softmax_xent %z, %y : (tensor<8x3xf32>, tensor<8xi32, #sbp.t<@one, [S(0)]>>) -> tensor<8xf32>
    %loss = sbp.mean %l : (tensor<8xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.5, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

// A model whose input "image" has 100 features: Fashion-MNIST has 784.
module @wrong {
  sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
  sbp.variable @w : tensor<100x10xf32, #sbp.t<@dp, [B]>> init #sbp.init<uniform, -0.1, 0.1> seed 7
  func.func @train() {
    %x = sbp.input "image" : tensor<64x100xf32, #sbp.t<@dp, [S(0)]>>
    %y = sbp.input "label" : tensor<64xi32, #sbp.t<@dp, [S(0)]>>
    %w = sbp.parameter @w : tensor<100x10xf32, #sbp.t<@dp, [B]>>
    %z = sbp.matmul %x, %w : (tensor<64x100xf32, #sbp.t<@dp, [S(0)]>>, tensor<100x10xf32, #sbp.t<@dp, [B]>>) -> tensor<64x10xf32>
    %l = sbp.softmax_xent %z, %y : (tensor<64x10xf32>, tensor<64xi32, #sbp.t<@dp, [S(0)]>>) -> tensor<64xf32>
    %loss = sbp.mean %l : (tensor<64xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.5, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

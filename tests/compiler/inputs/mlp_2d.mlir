// A 2-D data-parallel MLP: gradients are P(sum) on both hierarchy dimensions.
module @mlp {
  sbp.placement @dp cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @fc1.weight : tensor<784x64xf32, #sbp.t<@dp, [B, B]>> init #sbp.init<uniform, -0.0357, 0.0357> seed 17
  sbp.variable @fc1.bias : tensor<64xf32, #sbp.t<@dp, [B, B]>> init #sbp.init<zeros> seed 18
  sbp.variable @fc2.weight : tensor<64x10xf32, #sbp.t<@dp, [B, B]>> init #sbp.init<uniform, -0.1, 0.1> seed 19
  sbp.variable @fc2.bias : tensor<10xf32, #sbp.t<@dp, [B, B]>> init #sbp.init<zeros, 0.0, 0.0> seed 20
  func.func @train() {
    %x = sbp.input "image" : tensor<256x784xf32, #sbp.t<@dp, [S(0), S(0)]>>
    %y = sbp.input "label" : tensor<256xi32, #sbp.t<@dp, [S(0), S(0)]>>
    %w1 = sbp.parameter @fc1.weight : tensor<784x64xf32, #sbp.t<@dp, [B, B]>>
    %b1 = sbp.parameter @fc1.bias : tensor<64xf32, #sbp.t<@dp, [B, B]>>
    %w2 = sbp.parameter @fc2.weight : tensor<64x10xf32, #sbp.t<@dp, [B, B]>>
    %b2 = sbp.parameter @fc2.bias : tensor<10xf32, #sbp.t<@dp, [B, B]>>
    %h = sbp.matmul %x, %w1 : (tensor<256x784xf32, #sbp.t<@dp, [S(0), S(0)]>>, tensor<784x64xf32, #sbp.t<@dp, [B, B]>>) -> tensor<256x64xf32>
    %hb = sbp.bias_add %h, %b1 : (tensor<256x64xf32>, tensor<64xf32, #sbp.t<@dp, [B, B]>>) -> tensor<256x64xf32>
    %a = sbp.relu %hb : (tensor<256x64xf32>) -> tensor<256x64xf32>
    %o = sbp.matmul %a, %w2 : (tensor<256x64xf32>, tensor<64x10xf32, #sbp.t<@dp, [B, B]>>) -> tensor<256x10xf32>
    %ob = sbp.bias_add %o, %b2 : (tensor<256x10xf32>, tensor<10xf32, #sbp.t<@dp, [B, B]>>) -> tensor<256x10xf32>
    %l = sbp.softmax_xent %ob, %y : (tensor<256x10xf32>, tensor<256xi32, #sbp.t<@dp, [S(0), S(0)]>>) -> tensor<256xf32>
    %loss = sbp.mean %l : (tensor<256xf32>) -> tensor<f32>
    sbp.metric "loss" %loss : tensor<f32>
    sbp.minimize %loss {optimizer = #sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.0>} : tensor<f32>
    return
  }
}

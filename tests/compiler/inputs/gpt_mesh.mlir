// The one-layer char GPT of examples/gpt_char.cpp on a 2 x 2 [dp, tp] mesh, as
// its DSL writes it (gpt_char --dp 2 --tp 2 --n-layer 1 --emit-mlir FILE).
module @gpt_char {
  sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @wte.weight : tensor<114x128xf32> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 2072306235825989778
  sbp.variable @wpe.weight : tensor<64x128xf32> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 1000944787742975478
  sbp.variable @h.0.ln_1.weight : tensor<128xf32> init #sbp.init<constant, 1.000000e+00, 0.000000e+00> seed -6394433021646422428
  sbp.variable @h.0.ln_1.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 1946625256444615289
  sbp.variable @h.0.attn.q.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 6142437173594677364
  sbp.variable @h.0.attn.q.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 9199394448710243881
  sbp.variable @h.0.attn.k.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 3360438993948898150
  sbp.variable @h.0.attn.k.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 1972785770683741723
  sbp.variable @h.0.attn.v.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 6778599187456225107
  sbp.variable @h.0.attn.v.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed -3143505659651561530
  sbp.variable @h.0.attn.c_proj.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.000000e+00, 0.014142135623730949> seed 2839148563332056386
  sbp.variable @h.0.attn.c_proj.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed -2957000658040439129
  sbp.variable @h.0.ln_2.weight : tensor<128xf32> init #sbp.init<constant, 1.000000e+00, 0.000000e+00> seed -5843255333881266289
  sbp.variable @h.0.ln_2.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 8312287509765226834
  sbp.variable @h.0.mlp.fc.weight : tensor<512x128xf32, #sbp.t<@mesh, [B, S(0)]>> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed 801307884350319286
  sbp.variable @h.0.mlp.fc.bias : tensor<512xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed -1612700361999718581
  sbp.variable @h.0.mlp.proj.weight : tensor<128x512xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<normal, 0.000000e+00, 0.014142135623730949> seed 8704875042850339686
  sbp.variable @h.0.mlp.proj.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed -8331315195485585893
  sbp.variable @ln_f.weight : tensor<128xf32> init #sbp.init<constant, 1.000000e+00, 0.000000e+00> seed -3613407182949399557
  sbp.variable @ln_f.bias : tensor<128xf32> init #sbp.init<zeros, 0.000000e+00, 0.000000e+00> seed 3463649237352638526
  sbp.variable @lm_head.weight : tensor<114x128xf32> init #sbp.init<normal, 0.000000e+00, 2.000000e-02> seed -5218037692176586802
  func.func @train() {
    %0 = sbp.input "tokens" : tensor<12x64xi32, #sbp.t<@mesh, [S(0), B]>>
    %1 = sbp.input "targets" : tensor<12x64xi32, #sbp.t<@mesh, [S(0), B]>>
    %2 = sbp.parameter @wte.weight : tensor<114x128xf32>
    %3 = sbp.embedding %2, %0 : (tensor<114x128xf32>, tensor<12x64xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<12x64x128xf32>
    %4 = sbp.parameter @wpe.weight : tensor<64x128xf32>
    %5 = sbp.bias_add %3, %4 : (tensor<12x64x128xf32>, tensor<64x128xf32>) -> tensor<12x64x128xf32>
    %6 = sbp.parameter @h.0.ln_1.weight : tensor<128xf32>
    %7 = sbp.parameter @h.0.ln_1.bias : tensor<128xf32>
    %8 = sbp.layer_norm %5, %6, %7 {eps = 9.99999974E-6 : f32} : (tensor<12x64x128xf32>, tensor<128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %9 = sbp.parameter @h.0.attn.q.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>
    %10 = sbp.matmul %8, %9 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<12x64x128xf32>
    %11 = sbp.parameter @h.0.attn.q.bias : tensor<128xf32>
    %12 = sbp.bias_add %10, %11 : (tensor<12x64x128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %13 = sbp.parameter @h.0.attn.k.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>
    %14 = sbp.matmul %8, %13 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<12x64x128xf32>
    %15 = sbp.parameter @h.0.attn.k.bias : tensor<128xf32>
    %16 = sbp.bias_add %14, %15 : (tensor<12x64x128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %17 = sbp.parameter @h.0.attn.v.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>
    %18 = sbp.matmul %8, %17 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<128x128xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<12x64x128xf32>
    %19 = sbp.parameter @h.0.attn.v.bias : tensor<128xf32>
    %20 = sbp.bias_add %18, %19 : (tensor<12x64x128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %21 = sbp.causal_attention %12, %16, %20 {heads = 4 : i64} : (tensor<12x64x128xf32>, tensor<12x64x128xf32>, tensor<12x64x128xf32>) -> tensor<12x64x128xf32>
    %22 = sbp.parameter @h.0.attn.c_proj.weight : tensor<128x128xf32, #sbp.t<@mesh, [B, S(1)]>>
    %23 = sbp.matmul %21, %22 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<128x128xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<12x64x128xf32>
    %24 = sbp.parameter @h.0.attn.c_proj.bias : tensor<128xf32>
    %25 = sbp.bias_add %23, %24 : (tensor<12x64x128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %26 = sbp.add %5, %25 : (tensor<12x64x128xf32>, tensor<12x64x128xf32>) -> tensor<12x64x128xf32>
    %27 = sbp.parameter @h.0.ln_2.weight : tensor<128xf32>
    %28 = sbp.parameter @h.0.ln_2.bias : tensor<128xf32>
    %29 = sbp.layer_norm %26, %27, %28 {eps = 9.99999974E-6 : f32} : (tensor<12x64x128xf32>, tensor<128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %30 = sbp.parameter @h.0.mlp.fc.weight : tensor<512x128xf32, #sbp.t<@mesh, [B, S(0)]>>
    %31 = sbp.matmul %29, %30 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<512x128xf32, #sbp.t<@mesh, [B, S(0)]>>) -> tensor<12x64x512xf32>
    %32 = sbp.parameter @h.0.mlp.fc.bias : tensor<512xf32>
    %33 = sbp.bias_add %31, %32 : (tensor<12x64x512xf32>, tensor<512xf32>) -> tensor<12x64x512xf32>
    %34 = sbp.gelu %33 : (tensor<12x64x512xf32>) -> tensor<12x64x512xf32>
    %35 = sbp.parameter @h.0.mlp.proj.weight : tensor<128x512xf32, #sbp.t<@mesh, [B, S(1)]>>
    %36 = sbp.matmul %34, %35 {transpose_b = true} : (tensor<12x64x512xf32>, tensor<128x512xf32, #sbp.t<@mesh, [B, S(1)]>>) -> tensor<12x64x128xf32>
    %37 = sbp.parameter @h.0.mlp.proj.bias : tensor<128xf32>
    %38 = sbp.bias_add %36, %37 : (tensor<12x64x128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %39 = sbp.add %26, %38 : (tensor<12x64x128xf32>, tensor<12x64x128xf32>) -> tensor<12x64x128xf32>
    %40 = sbp.parameter @ln_f.weight : tensor<128xf32>
    %41 = sbp.parameter @ln_f.bias : tensor<128xf32>
    %42 = sbp.layer_norm %39, %40, %41 {eps = 9.99999974E-6 : f32} : (tensor<12x64x128xf32>, tensor<128xf32>, tensor<128xf32>) -> tensor<12x64x128xf32>
    %43 = sbp.parameter @lm_head.weight : tensor<114x128xf32>
    %44 = sbp.matmul %42, %43 {transpose_b = true} : (tensor<12x64x128xf32>, tensor<114x128xf32>) -> tensor<12x64x114xf32>
    %45 = sbp.softmax_xent %44, %1 : (tensor<12x64x114xf32>, tensor<12x64xi32, #sbp.t<@mesh, [S(0), B]>>) -> tensor<12x64xf32>
    %46 = sbp.mean %45 : (tensor<12x64xf32>) -> tensor<f32>
    sbp.metric "loss" %46 : tensor<f32>
    sbp.minimize %46 {max_grad_norm = 1.000000e+00 : f32, optimizer = #sbp.adamw<lr = 1.000000e-03, beta1 = 9.000000e-01, beta2 = 0.98999999999999999, eps = 1.000000e-08, weight_decay = 1.000000e-01>} : tensor<f32>
    return
  }
}

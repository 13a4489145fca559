// A character-level GPT (nanoGPT's shakespeare_char CPU configuration) trained
// on Debian's fortunes text over a [dp, tp] mesh of CPU ranks, with Megatron
// tensor parallelism from weight annotations alone; `sample` generates text
// from a checkpoint on one in-process rank.
#include "actors/Executor.h"
#include "actors/Messages.h"
#include "compiler/CompileFlags.h"
#include "frontend/Compile.h"
#include "frontend/Model.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/cluster/Driver.h"
#include "runtime/data/FortunesText.h"
#include "runtime/plan/PlanLoader.h"

#include <CLI/CLI.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace sbpflow;

namespace {

struct GptConfig {
  int64_t vocab = 0;
  int64_t nLayer = 4;
  int64_t nHead = 4;
  int64_t nEmbd = 128;
  int64_t blockSize = 64;
  double dropout = 0.0; // nanoGPT's CPU command line (--dropout=0.0)
};

// Next-token logits [batch, T, vocab] of nanoGPT's GPT (pre-LayerNorm blocks,
// separate q/k/v, exact GELU, untied lm_head). Weights are PyTorch-shaped
// [out, in] and named like nanoGPT's state_dict (bench/gpt_torch.py loads
// them by name). On the tp dimension of the mesh q, k, v and fc are
// column-parallel (weights S(0)), c_proj and proj row-parallel (S(1)); the
// compiler derives the rest. Dropout only acts in @train.
Tensor gptLogits(Model &m, Placement mesh, Tensor tokens, const GptConfig &c) {
  const int64_t C = c.nEmbd;
  nn::LinearOptions column, row;
  column.weight_sbp = std::vector<Sbp>{B, S(0)};
  row.weight_sbp = std::vector<Sbp>{B, S(1)};
  column.weight_init = Init::normal(0, 0.02);
  column.bias_init = Init::zeros();
  // GPT-2's scaled init of the projections into the residual stream.
  row.weight_init = Init::normal(0, 0.02 / std::sqrt(2.0 * static_cast<double>(c.nLayer)));
  row.bias_init = Init::zeros();

  Tensor x = nn::embedding(tokens, c.vocab, C, "wte");
  x = add(x, m.parameter("wpe.weight", {c.blockSize, C}, Init::normal(0, 0.02), mesh));
  x = dropout(x, c.dropout, "drop");
  for (int64_t i = 0; i < c.nLayer; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    Tensor n1 = nn::layer_norm(x, h + "ln_1");
    Tensor q = nn::linear(n1, C, h + "attn.q", column);
    Tensor k = nn::linear(n1, C, h + "attn.k", column);
    Tensor v = nn::linear(n1, C, h + "attn.v", column);
    Tensor a = nn::linear(causal_attention(q, k, v, c.nHead), C, h + "attn.c_proj", row);
    x = add(x, dropout(a, c.dropout, h + "attn.resid_dropout"));
    Tensor n2 = nn::layer_norm(x, h + "ln_2");
    Tensor f = gelu(nn::linear(n2, 4 * C, h + "mlp.fc", column));
    f = nn::linear(f, C, h + "mlp.proj", row);
    x = add(x, dropout(f, c.dropout, h + "mlp.dropout"));
  }
  x = nn::layer_norm(x, "ln_f");
  nn::LinearOptions head;
  head.bias = false;
  head.weight_init = Init::normal(0, 0.02);
  return nn::linear(x, c.vocab, "lm_head", head);
}

struct TrainSettings {
  int64_t dp = 1, tp = 1, batch = 12;
  double lr = 1e-3;
  bool evaluate = false;
  CompileOptions compile;     // --bf16, --compress and its settings
  std::string device = "cpu"; // the ranks' devices (--device)
  uint64_t seed = 1;
};

// The training model: AdamW with nanoGPT's betas (0.9, 0.99) and weight decay
// 0.1 on matrices only, gradients clipped to norm 1.
void buildTrainModel(Model &m, const GptConfig &c, const TrainSettings &s) {
  auto mesh = m.placement("mesh", devices(s.device, {s.dp, s.tp}));
  auto tokens = m.input("tokens", {s.batch, c.blockSize}, i32, mesh, {S(0), B});
  auto targets = m.input("targets", {s.batch, c.blockSize}, i32, mesh, {S(0), B});
  Tensor logits = gptLogits(m, mesh, tokens, c);
  optim::AdamW adamw;
  adamw.lr = s.lr;
  adamw.beta1 = 0.9;
  adamw.beta2 = 0.99;
  adamw.eps = 1e-8;
  adamw.weight_decay = 0.1;
  m.minimize(cross_entropy(logits, targets), adamw, /*max_grad_norm=*/1.0);
  // Correct next characters of the validation split (the driver divides by
  // the characters counted: windows x T); @eval also reports the loss.
  if (s.evaluate)
    m.evaluate("correct", correct_count(logits, targets));
}

// The sampling model: batch 1, no dropout, "probs" = softmax of the logits.
void buildSampleModel(Model &m, const GptConfig &c) {
  auto one = m.placement("mesh", cpu({1, 1}));
  auto tokens = m.input("tokens", {1, c.blockSize}, i32, one, {B, B});
  GptConfig eval = c;
  eval.dropout = 0;
  m.output("probs", softmax(gptLogits(m, one, tokens, eval)));
}

// One in-process rank running `plan` (a 1-rank plan): initialises the
// variables from their seeds, as every rank of a job does.
struct LocalRank {
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  std::unique_ptr<Executor> executor;
  LoadedPlan plan;

  Status start(std::vector<uint8_t> bytes, int threads) {
    auto loaded = loadPlanBuffer(std::move(bytes));
    if (!loaded)
      return loaded.status().withContext("plan");
    plan = loaded.take();
    configureExecutorSystem(config, threads);
    system = std::make_unique<caf::actor_system>(config);
    ExecutorOptions options;
    options.kernelThreads = threads;
    auto exec = Executor::create(*system, plan.plan(), nullptr, options);
    if (!exec)
      return exec.status();
    executor = exec.take();
    return Status::ok();
  }
};

// The tokens a sampling step reads: the current context, padded to T with id
// 0 after its end (causal attention keeps the padding out of every position
// that is read).
class ContextData final : public DataSource {
public:
  explicit ContextData(int64_t T) : T_(T) { fields_ = {{"tokens", FieldType::I32, {T}}}; }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1; }
  Status fill(const std::string &field, int64_t, int64_t, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    if (field != "tokens" || rowBegin != 0 || rowCount != 1)
      return Status::error("sampling context: asked for field '" + field + "' rows " +
                           std::to_string(rowBegin) + "+" + std::to_string(rowCount) +
                           " (it holds one row of \"tokens\")");
    auto *out = static_cast<int32_t *>(dst);
    std::fill(out, out + T_, 0);
    std::copy(context.begin(), context.end(), out);
    return Status::ok();
  }
  std::vector<int32_t> context; // at most T ids

private:
  int64_t T_;
  std::vector<FieldInfo> fields_;
};

struct SampleSettings {
  std::string checkpoint;
  int64_t tokens = 500;
  uint64_t seed = 1;
  std::string prompt = "\n";
  double temperature = 1.0;
};

// Draws an id from probabilities `p` sharpened by 1 / temperature.
int32_t drawToken(const float *p, int64_t vocab, double temperature, std::mt19937_64 &rng) {
  std::vector<double> w(vocab);
  double top = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    w[i] = p[i] > 0 ? std::log(static_cast<double>(p[i])) / temperature : -INFINITY;
    top = std::max(top, w[i]);
  }
  double total = 0;
  for (double &x : w)
    total += (x = std::exp(x - top));
  double u = std::uniform_real_distribution<double>(0.0, total)(rng);
  for (int64_t i = 0; i < vocab; ++i) {
    u -= w[i];
    if (u < 0)
      return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(vocab - 1);
}

int sample(const GptConfig &config, const SampleSettings &s, const FortunesText &text,
           int threads) {
  auto prompt = text.encode(s.prompt);
  if (!prompt) {
    std::fprintf(stderr, "error: prompt: %s\n", prompt.status().message().c_str());
    return 1;
  }
  if (prompt->empty()) {
    std::fprintf(stderr, "error: the prompt is empty (give at least one character)\n");
    return 1;
  }
  Model m("gpt_char_sample", s.seed);
  buildSampleModel(m, config);
  auto bytes = compileModel(m);
  if (!bytes) {
    std::fprintf(stderr, "error: %s\n", bytes.status().message().c_str());
    return 1;
  }
  // Shapes are checked when loading; a deeper model's checkpoint would load
  // its first blocks without complaint.
  auto reader = checkpoint::CheckpointReader::open(s.checkpoint);
  if (!reader) {
    std::fprintf(stderr, "error: %s\n", reader.status().message().c_str());
    return 1;
  }
  const std::string extraBlock = "h." + std::to_string(config.nLayer) + ".";
  for (const checkpoint::TensorMeta &t : reader->tensors())
    if (t.name.rfind(extraBlock, 0) == 0) {
      std::fprintf(stderr,
                   "error: checkpoint %s holds '%s': it has more than %lld blocks (--n-layer)\n",
                   s.checkpoint.c_str(), t.name.c_str(), static_cast<long long>(config.nLayer));
      return 1;
    }
  LocalRank rank;
  if (Status st = rank.start(bytes.take(), threads); !st) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 1;
  }
  if (Status st = rank.executor->loadCheckpoint(s.checkpoint); !st) {
    std::fprintf(stderr, "error: loading checkpoint %s: %s\n", s.checkpoint.c_str(),
                 st.message().c_str());
    return 1;
  }

  const int64_t T = config.blockSize, V = config.vocab;
  ContextData data(T);
  std::vector<int32_t> generated = *prompt;
  std::mt19937_64 rng(s.seed);
  std::vector<float> probs;
  for (int64_t n = 0; n < s.tokens; ++n) {
    // The last T ids: nanoGPT crops the context to the block size.
    size_t keep = std::min<size_t>(generated.size(), static_cast<size_t>(T));
    data.context.assign(generated.end() - keep, generated.end());
    Status st =
        rank.executor->run("eval", &data, 0, 0, 1, [](int64_t, const std::vector<double> &) {});
    if (st)
      st = rank.executor->readOutput("eval", "probs", probs);
    if (!st) {
      std::fprintf(stderr, "error: sampling token %lld: %s\n", static_cast<long long>(n),
                   st.message().c_str());
      return 1;
    }
    if (static_cast<int64_t>(probs.size()) != T * V) {
      std::fprintf(stderr, "error: output \"probs\" holds %zu values, expected %lld\n",
                   probs.size(), static_cast<long long>(T * V));
      return 1;
    }
    generated.push_back(drawToken(&probs[(keep - 1) * V], V, s.temperature, rng));
  }
  auto decoded = text.decode(generated);
  if (!decoded) {
    std::fprintf(stderr, "error: %s\n", decoded.status().message().c_str());
    return 1;
  }
  std::fwrite(decoded->data(), 1, decoded->size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

// The loss a model without context reaches: the cross-entropy (nats per
// character) of the validation bytes under the training split's byte
// frequencies, add-one smoothed over the vocabulary.
double unigramBaseline(const FortunesText &train, const FortunesText &val) {
  std::vector<double> count(train.vocab().size(), 1.0);
  for (int32_t id : train.splitTokens())
    count[id] += 1.0;
  double total = 0;
  for (double c : count)
    total += c;
  double nats = 0;
  for (int32_t id : val.splitTokens())
    nats -= std::log(count[id] / total);
  return nats / static_cast<double>(val.splitTokens().size());
}

// Writes the initial weights (and zero optimiser state) as a checkpoint from
// one in-process rank: variables start from their seeds alone, so they equal
// those of any [dp, tp] job with the same seed (bench/run_gpt_bench.sh hands
// them to PyTorch).
int writeInitialCheckpoint(const GptConfig &config, TrainSettings s, const std::string &dir,
                           int threads) {
  s.dp = s.tp = 1;
  s.device = "cpu"; // written by an in-process CPU rank; loads on any device
  Model m("gpt_char", s.seed);
  buildTrainModel(m, config, s);
  auto bytes = compileModel(m);
  if (!bytes) {
    std::fprintf(stderr, "error: %s\n", bytes.status().message().c_str());
    return 1;
  }
  LocalRank rank;
  Status st = rank.start(bytes.take(), threads);
  if (st)
    st = rank.executor->saveCheckpoint(dir);
  if (!st) {
    std::fprintf(stderr, "error: writing the initial checkpoint to %s: %s\n", dir.c_str(),
                 st.message().c_str());
    return 1;
  }
  std::printf("wrote the initial weights to %s\n", dir.c_str());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Train a character-level GPT on the fortunes text over a [dp, tp] mesh of CPU "
               "ranks, or sample from a checkpoint (gpt_char sample --checkpoint DIR)"};
  app.fallthrough(); // model options before or after `sample`
  GptConfig config;
  TrainSettings train;
  int64_t steps = 2000, evalEvery = 0;
  std::string emitMlir, emitPlan, initCheckpoint;
  RunOptions run;
  run.data = "fortunes";
  run.dataDir = kDefaultFortunesDir;
  run.logEvery = 10;
  app.add_option("--dp", train.dp, "data-parallel ranks (first mesh dimension)")
      ->check(CLI::PositiveNumber);
  app.add_option("--tp", train.tp, "tensor-parallel ranks (second mesh dimension)")
      ->check(CLI::PositiveNumber);
  app.add_option("--batch", train.batch, "global batch (sequences per step)")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "train steps")->check(CLI::NonNegativeNumber);
  app.add_option("--eval-every", evalEvery,
                 "run the validation split every N steps (0: never); needs N to divide --steps")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lr", train.lr, "AdamW learning rate")->check(CLI::PositiveNumber);
  app.add_option("--dropout", config.dropout, "dropout probability (training only)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_option("--seed", train.seed, "initialisation, data and dropout seed");
  addCompileFlags(app, train.compile);
  app.add_option("--n-layer", config.nLayer, "transformer blocks")->check(CLI::PositiveNumber);
  app.add_option("--n-head", config.nHead, "attention heads")->check(CLI::PositiveNumber);
  app.add_option("--n-embd", config.nEmbd, "model width")->check(CLI::PositiveNumber);
  app.add_option("--block-size", config.blockSize, "context length")->check(CLI::PositiveNumber);
  app.add_option("--emit-mlir", emitMlir, "write the model's MLIR (before compilation) here");
  app.add_option("--emit-plan", emitPlan, "write the compiled plan here");
  app.add_option("--init-checkpoint", initCheckpoint,
                 "write the initial weights (step 0) as a checkpoint to DIR and exit");
  addRunOptions(app, run);

  SampleSettings sampling;
  CLI::App *sampleCmd = app.add_subcommand("sample", "generate text from a checkpoint");
  sampleCmd->add_option("--checkpoint", sampling.checkpoint, "checkpoint directory")->required();
  sampleCmd->add_option("--tokens", sampling.tokens, "characters to generate")
      ->check(CLI::PositiveNumber);
  sampleCmd->add_option("--seed", sampling.seed, "sampling seed");
  sampleCmd->add_option("--prompt", sampling.prompt, "text to continue (default: a newline)");
  sampleCmd
      ->add_option("--temperature", sampling.temperature,
                   "< 1 sharper, > 1 flatter than the model's distribution")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  if (config.nEmbd % config.nHead != 0) {
    std::fprintf(stderr, "error: --n-head %lld does not divide --n-embd %lld\n",
                 static_cast<long long>(config.nHead), static_cast<long long>(config.nEmbd));
    return 1;
  }
  // The vocabulary is the corpus's distinct bytes: the same files give the
  // same ids in training, on every worker, and when sampling.
  auto text = openFortunesText(run.dataDir, true, train.seed, config.blockSize);
  if (!text) {
    std::fprintf(stderr, "error: %s\n", text.status().message().c_str());
    return 1;
  }
  config.vocab = static_cast<int64_t>((*text)->vocab().size());

  try {
    if (sampleCmd->parsed())
      return sample(config, sampling, **text, run.threads);
    if (!initCheckpoint.empty())
      return writeInitialCheckpoint(config, train, initCheckpoint, run.threads);

    if (app.count("--epochs") || app.count("--max-steps")) {
      std::fprintf(stderr, "error: gpt_char counts training in --steps and --eval-every, "
                           "not --epochs / --max-steps\n");
      return 1;
    }
    if (steps == 0) {
      std::fprintf(stderr, "error: --steps 0 trains nothing (--init-checkpoint DIR writes the "
                           "initial weights)\n");
      return 1;
    }
    if (evalEvery > 0 && steps % evalEvery != 0) {
      std::fprintf(stderr, "error: --eval-every %lld does not divide --steps %lld\n",
                   static_cast<long long>(evalEvery), static_cast<long long>(steps));
      return 1;
    }
    // The driver validates after every epoch: an epoch is one evaluation
    // interval (each draws its own random windows).
    train.evaluate = evalEvery > 0;
    run.maxSteps = evalEvery > 0 ? evalEvery : steps;
    run.epochs = static_cast<int>(evalEvery > 0 ? steps / evalEvery : 1);

    Model m("gpt_char", train.seed);
    train.device = run.device;
    buildTrainModel(m, config, train);
    auto plan = compileModel(m, emitMlir, emitPlan, train.compile);
    if (!plan) {
      std::fprintf(stderr, "error: %s\n", plan.status().message().c_str());
      return 1;
    }
    if (run.planOnly)
      return 0;
    run.seed = train.seed;
    run.localWorkers = static_cast<int>(train.dp * train.tp);
    JobReport report;
    Status s = runJob(*plan, run, &report);
    if (!s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 1;
    }
    if (evalEvery > 0) {
      auto val = openFortunesText(run.dataDir, false, train.seed, config.blockSize);
      if (!val) {
        std::fprintf(stderr, "error: %s\n", val.status().message().c_str());
        return 1;
      }
      std::printf("unigram baseline: validation loss %.4f (train byte frequencies)\n",
                  unigramBaseline(**text, **val));
    }
    for (size_t e = 0; e < report.testAccuracy.size() && e < report.evalLoss.size(); ++e)
      std::printf("after step %lld: validation loss %.4f, character accuracy %.4f\n",
                  static_cast<long long>((e + 1) * evalEvery), report.evalLoss[e],
                  report.testAccuracy[e]);
  } catch (const ModelError &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

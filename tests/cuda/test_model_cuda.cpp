// The whole model on the CUDA backend against the same model on the CPU: a tiny GPT-2 and a tiny
// Llama (GQA, RoPE, SwiGLU), loss and every gradient in f32 under each recompute mode, 20 bf16
// AdamW steps, greedy generation through the KV cache, and checkpoints written from one device and
// read on the other. On the simulated GPU this runs every kernel the model uses, under the order
// the test binary was started with.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "core/cuda/cuda_allocator.h"
#include "core/cuda/cuda_device.h"
#include "core/philox.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "unit/model_testing.h"
#include "unit/op_testing.h"

#if STRATA_GPUSIM
#include "gpusim/control.h"
#endif

using namespace strata;

namespace {

using strata::testing::max_relative_error;
using strata::testing::tiny;

// head_dim 16 and a vocabulary that is not a multiple of any tile or vector width.
ModelConfig small(const std::string& arch) {
  ModelConfig c = tiny(arch);
  c.d_model = 32;
  c.n_heads = 2;
  c.d_ff = 48;
  c.vocab_size = 37;
  c.max_seq_len = 24;
  return c;
}

class ModelOnCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
    device_ = std::make_unique<CudaDevice>(0);
  }
  std::unique_ptr<Transformer> make(const ModelConfig& c, DType dtype, bool on_gpu) {
    return std::make_unique<Transformer>(c, dtype, TensorParallel{}, std::vector<ChunkSpec>{}, SequenceParallel{},
                                         ExpertParallel{}, ParamStorage{.allocator = on_gpu ? device_.get() : nullptr});
  }
  // Values larger than the training init (std 0.02), so every path carries a signal; the same on
  // both devices (drawn on the host, then copied).
  static void randomize(Transformer& model) {
    for (auto& p : model.params().all()) {
      Tensor host = Tensor::empty(p->value.shape(), p->value.dtype());
      fill_uniform(host, 3, philox::stream_key(p->name), -0.5, 0.5);
      p->value.copy_from(host);
    }
  }
  std::unique_ptr<CudaDevice> device_;
};

void batch(const ModelConfig& c, int64_t b, int64_t seq, uint64_t seed, Tensor& ids, Tensor& targets) {
  strata::testing::make_token_batch(c.vocab_size, b, seq, seed, ids, targets);
  targets.data<int32_t>()[1] = -1;  // an ignored target
}

struct Case {
  std::string arch;
  Recompute recompute;
  bool moe = false;  // every other FFN a mixture of 4 experts, top-2, capacity 1.0 (some drop)
};

ModelConfig case_config(const Case& k) {
  ModelConfig c = small(k.arch);
  if (k.moe) {
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.capacity_factor = 1.0;
    c.moe.aux_loss_coef = 0.3;  // large, so the auxiliary gradients weigh in the check
    c.moe.z_loss_coef = 0.05;
    c.moe.every = 2;
  }
  return c;
}

class ModelGradientsOnCuda : public ModelOnCuda, public ::testing::WithParamInterface<Case> {};

TEST_P(ModelGradientsOnCuda, LossAndEveryGradientEqualTheCpus) {
  const ModelConfig c = case_config(GetParam());
  auto cpu = make(c, DType::f32, false), gpu = make(c, DType::f32, true);
  randomize(*cpu);
  randomize(*gpu);
  Tensor ids, targets;
  batch(c, 2, 19, 5, ids, targets);
  double loss[2];
  int i = 0;
  for (Transformer* m : {cpu.get(), gpu.get()}) {
    m->params().zero_grads();
    loss[i++] = m->forward(ids, targets, GetParam().recompute);
    m->backward(1.0);
  }
  // f32 on both sides; the kernels sum in other orders than the CPU loops (tiles, warp trees):
  // the 1e-5 relative bound, on the loss and on each gradient relative to its own scale
  // (at least 1e-3 of the model's largest gradient). A gradient that is zero by symmetry (GPT-2's
  // key bias: softmax ignores a shift of all of a query's scores) holds only f32 rounding on both
  // sides, which two orders of summation need not share: it is checked to be that small instead,
  // within 1e-7 of the largest gradient (measured at most 1.2e-8 on either side; f32's epsilon is
  // 6e-8). The relative comparison it had before failed on a CPU whose OpenBLAS kernels sum in
  // another order (1.5e-5 against 1e-5, noise against noise).
  EXPECT_NEAR(loss[1], loss[0], 1e-5 * std::abs(loss[0]));
  // The auxiliary losses and the routing itself (loads, drops) of the mixture-of-experts layers.
  EXPECT_NEAR(gpu->aux_loss(), cpu->aux_loss(), 1e-5 * std::abs(cpu->aux_loss()));
  ASSERT_EQ(gpu->routing_log().size(), cpu->routing_log().size());
  if (GetParam().moe) {
    ASSERT_EQ(cpu->routing_log().size(), static_cast<size_t>(c.n_layers / 2)) << "the MoE layers routed";
    EXPECT_GT(cpu->routing_log().begin()->second.dropped, 0) << "capacity 1.0 drops some token-choices";
  }
  for (const auto& [layer, routing] : cpu->routing_log()) {
    EXPECT_EQ(gpu->routing_log().at(layer).load, routing.load) << "layer " << layer;
    EXPECT_EQ(gpu->routing_log().at(layer).dropped, routing.dropped) << "layer " << layer;
  }
  double largest = 0;
  for (auto& p : cpu->params().all()) {
    const Tensor g = p->accum().contiguous();
    for (int64_t e = 0; e < g.numel(); ++e) largest = std::max(largest, std::abs(double{g.data<float>()[e]}));
  }
  for (size_t p = 0; p < cpu->params().all().size(); ++p) {
    Parameter& want = *cpu->params().all()[p];
    Parameter& got = *gpu->params().all()[p];
    if (want.name.find("attn.wk.bias") != std::string::npos) {
      for (const Tensor& g : {want.accum().contiguous(), got.accum().to_cpu()})
        for (int64_t e = 0; e < g.numel(); ++e)
          EXPECT_LE(std::abs(double{g.data<float>()[e]}), 1e-7 * largest) << want.name << " element " << e;
      continue;
    }
    EXPECT_LE(max_relative_error(got.accum(), want.accum(), 1e-3 * largest), 1e-5) << want.name;
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& c) {
  static const char* const kModes[] = {"none", "selective", "full"};
  return c.param.arch + (c.param.moe ? "_moe_" : "_") + kModes[static_cast<int>(c.param.recompute)];
}

INSTANTIATE_TEST_SUITE_P(Model, ModelGradientsOnCuda,
                         ::testing::Values(Case{"gpt2", Recompute::none}, Case{"llama", Recompute::none},
                                           Case{"gpt2", Recompute::selective}, Case{"llama", Recompute::full},
                                           Case{"llama", Recompute::none, true}, Case{"gpt2", Recompute::full, true}),
                         case_name);

TEST_F(ModelOnCuda, TwentyBf16StepsFollowTheCpuCurve) {
  for (const Case& k : {Case{"gpt2", Recompute::none}, Case{"llama", Recompute::none}, Case{"llama", Recompute::none, true}}) {
    const ModelConfig c = case_config(k);
    const std::string arch = k.arch + (k.moe ? " moe" : "");
    std::vector<double> curve[2];
    for (int side = 0; side < 2; ++side) {
      auto model = make(c, DType::bf16, side == 1);
      model->params().initialize(11);
      AdamW opt(model->params(), AdamWHyper{0.9, 0.95, 1e-8, 0.1});
      for (int step = 0; step < 20; ++step) {
        Tensor ids, targets;
        batch(c, 2, 16, 100 + static_cast<uint64_t>(step % 4), ids, targets);
        model->params().zero_grads();
        curve[side].push_back(model->forward(ids, targets));
        model->backward(1.0);
        opt.step(1e-2, 1.0);
      }
    }
    // bf16 activations carry 8 significant bits (relative rounding 2^-9 per value); the two
    // backends round at the same points but sum in other orders, so single values may differ by
    // an ulp and the difference grows with the updates. 2e-2 relative on each loss holds the curves
    // together while a wrong kernel (off by a term, a transposed operand) is off by far more.
    for (int step = 0; step < 20; ++step)
      EXPECT_NEAR(curve[1][step], curve[0][step], 2e-2 * curve[0][step]) << arch << " step " << step;
    EXPECT_LT(curve[1].back(), curve[1].front()) << arch << ": the CUDA run did not learn";
  }
}

TEST_F(ModelOnCuda, GreedyGenerationGivesTheCpusTokens) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const ModelConfig c = small(arch);
    auto cpu = make(c, DType::f32, false), gpu = make(c, DType::f32, true);
    randomize(*cpu);
    randomize(*gpu);
    GenerateOptions options;
    options.max_new_tokens = 12;
    options.stop_token = -1;
    const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7, 30, 4, 4, 9}};
    EXPECT_EQ(generate(*gpu, prompts, options), generate(*cpu, prompts, options)) << arch;
  }
}

#if STRATA_GPUSIM
// A training forward and backward on the device makes the host wait for nothing and reads
// nothing back (the loss goes to a device sink, as the trainer's does): counted by the simulated
// GPU over a second step (the first creates buffers and caches). That holds for dense models and
// for MoE with a capacity (the fixed layout); dropless MoE sizes its experts' products from the
// counts, so its forward reads them, once per MoE layer (and again where full recompute reruns
// that forward).
TEST_F(ModelOnCuda, TrainingForwardAndBackwardNeverWaitForTheDevice) {
  struct WaitCase {
    std::string arch;
    double capacity_factor;  // < 0: dense
    Recompute recompute;
    int64_t waits;           // expected host waits (dropless MoE: its layers' reads)
  };
  const ModelConfig dense = small("llama");
  const int64_t moe_layers = dense.n_layers / 2;
  const std::vector<WaitCase> cases = {{"gpt2", -1, Recompute::none, 0},
                                       {"llama", -1, Recompute::full, 0},
                                       {"llama", 1.0, Recompute::none, 0},
                                       {"gpt2", 1.25, Recompute::full, 0},
                                       {"llama", 0.0, Recompute::none, moe_layers},
                                       {"llama", 0.0, Recompute::full, 2 * moe_layers}};
  for (const WaitCase& w : cases) {
    ModelConfig c = small(w.arch);
    if (w.capacity_factor >= 0) {
      c = case_config({w.arch, w.recompute, true});
      c.moe.capacity_factor = w.capacity_factor;
    }
    auto gpu = make(c, DType::f32, true);
    randomize(*gpu);
    Tensor ids, targets;
    batch(c, 2, 19, 5, ids, targets);
    Tensor loss_sum = Tensor::zeros({1}, DType::f64, *device_);
    gpu->set_loss_sink(&loss_sum);
    auto step = [&] {
      gpu->params().zero_grads();
      gpu->forward(ids, targets, w.recompute);
      gpu->backward(1.0);
    };
    step();
    gpusim::drain_all();
    const gpusim::Counters before = gpusim::counters();
    step();
    const gpusim::Counters after = gpusim::counters();
    const std::string what = w.arch + (w.capacity_factor < 0 ? " dense" : " MoE cf " + std::to_string(w.capacity_factor)) +
                             (w.recompute == Recompute::full ? ", full recompute" : "");
    EXPECT_EQ(after.host_waits - before.host_waits, static_cast<uint64_t>(w.waits)) << what;
    if (w.waits == 0) {
      EXPECT_EQ(after.bytes_to_host - before.bytes_to_host, 0u) << what;
    }
    EXPECT_GT(after.pending_ops, 0u) << what << ": the step's work is still queued, not run";
    gpu->set_loss_sink(nullptr);
    // What the step computed is there: a finite loss, and (MoE) the routing of both steps.
    EXPECT_TRUE(std::isfinite(loss_sum.to_cpu().data<double>()[0])) << what;
    if (w.capacity_factor >= 0) {
      EXPECT_EQ(gpu->routing_log().size(), static_cast<size_t>(moe_layers)) << what;
    }
  }
}

// What crosses to the host while generating, counted by the simulated GPU's copy counters: greedy
// decoding reads the chosen ids, top-k sampling the k best logits and ids, and only top-p (which
// needs the whole distribution) reads whole logits rows. A vocabulary of 1000 (a row: 4000 bytes
// of f32) keeps a leak of rows far above the bounds.
TEST_F(ModelOnCuda, DecodingReadsAtMostTheChosenTokensToTheHost) {
  ModelConfig c = small("llama");
  c.vocab_size = 1000;
  auto gpu = make(c, DType::f32, true);
  randomize(*gpu);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7, 30, 4, 4, 9}};
  const int64_t tokens = 12, row_bytes = c.vocab_size * 4;
  auto bytes_read = [&](const SamplingConfig& sampling) {
    GenerateOptions options;
    options.max_new_tokens = tokens;
    options.stop_token = -1;
    options.sampling = sampling;
    gpusim::drain_all();
    const uint64_t before = gpusim::counters().bytes_to_host;
    generate(*gpu, prompts, options);
    gpusim::drain_all();
    return static_cast<int64_t>(gpusim::counters().bytes_to_host - before);
  };
  const int64_t choices = static_cast<int64_t>(prompts.size()) * tokens;  // rows a token is chosen for
  const int64_t greedy = bytes_read({}), top_k = bytes_read({.temperature = 1.0, .top_k = 5, .seed = 3}),
                top_p = bytes_read({.temperature = 1.0, .top_p = 0.9, .seed = 3});
  // Per choice: greedy one i32 id; top-k 5 f32 logits and 5 i32 ids (measured: exactly these).
  EXPECT_LE(greedy, choices * 4) << "greedy read " << greedy << " bytes";
  EXPECT_LE(top_k, choices * 5 * 8) << "top-k read " << top_k << " bytes";
  EXPECT_GE(top_p, choices * row_bytes) << "top-p reads whole rows: the counter must see them";

  // Greedy speculative decoding (a draft of the same weights, 3 tokens a round): the draft's
  // chosen ids and the target's draft_tokens + 1 ids a verification forward.
  auto draft = make(c, DType::f32, true);
  randomize(*draft);
  GenerateOptions options;
  options.max_new_tokens = tokens;
  options.stop_token = -1;
  SpeculativeStats stats;
  gpusim::drain_all();
  const uint64_t before = gpusim::counters().bytes_to_host;
  generate_speculative(*gpu, *draft, prompts[1], options, 3, &stats);
  gpusim::drain_all();
  const auto speculative = static_cast<int64_t>(gpusim::counters().bytes_to_host - before);
  EXPECT_LE(speculative, (stats.proposed + stats.target_forwards * (3 + 1)) * 4)
      << "speculative read " << speculative << " bytes";
}
#endif

TEST_F(ModelOnCuda, CheckpointsMoveBetweenDevices) {
  const ModelConfig c = small("llama");
  const auto dir = std::filesystem::temp_directory_path() / ("strata_cuda_ckpt_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto entries = [](Transformer& m) {
    std::vector<CheckpointEntry> out;
    for (auto& p : m.params().all()) out.push_back({p->name, p->global_shape, p->global_offset(), &p->value, true});
    return out;
  };
  for (const bool from_gpu : {true, false}) {
    auto writer = make(c, DType::bf16, from_gpu), reader = make(c, DType::bf16, !from_gpu);
    writer->params().initialize(from_gpu ? 21 : 22);
    const std::string path =
        save_checkpoint((dir / (from_gpu ? "from_gpu" : "from_cpu")).string(), Manifest{}, entries(*writer), {});
    load_checkpoint(path, entries(*reader));
    for (size_t p = 0; p < writer->params().all().size(); ++p)
      EXPECT_EQ(max_relative_error(reader->params().all()[p]->value, writer->params().all()[p]->value), 0.0)
          << (from_gpu ? "GPU -> CPU " : "CPU -> GPU ") << writer->params().all()[p]->name;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// Two prompts of 3 and 7 tokens: the prefill's 10 rows take gemm_int8's dequantise-then-gemm
// path, every decode step's 2 rows its fused GEMV.
const std::vector<std::vector<int32_t>> kPrompts = {{1, 2, 3}, {7, 30, 4, 4, 9, 11, 2}};

// int8 weights on the device: the codes and scales stay there and the forward of each quantised
// linear runs there. The logits of a prompt (through both gemm_int8 paths) are within 1e-5 of the
// CPU int8 model's (the GPU sums in another order) and away from the unquantised ones, and greedy
// tokens equal the CPU int8 model's.
TEST_F(ModelOnCuda, Int8GreedyGenerationGivesTheCpusTokens) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const ModelConfig c = small(arch);
    auto cpu = make(c, DType::f32, false), gpu = make(c, DType::f32, true);
    randomize(*cpu);
    randomize(*gpu);
    auto logits = [&](const Transformer& m, const std::vector<int32_t>& prompt) {
      const auto n = static_cast<int64_t>(prompt.size());
      KvCache cache = m.make_kv_cache(1, n);
      const std::vector<CacheSegment> seg = {{0, n, 0}};
      return m.forward_cached(Tensor::from_vector(prompt, {n}), seg, cache, false).to_cpu();
    };
    const Tensor plain = logits(*cpu, kPrompts[1]);
    EXPECT_EQ(gpu->quantize_int8(), cpu->quantize_int8()) << arch;
    for (const auto& prompt : kPrompts) {
      const Tensor want = logits(*cpu, prompt);
      EXPECT_LE(max_relative_error(logits(*gpu, prompt), want), 1e-5) << arch << ", " << prompt.size() << " rows";
      if (prompt.size() == kPrompts[1].size()) {
        EXPECT_GT(max_relative_error(want, plain), 1e-4) << arch;
      }
    }
    GenerateOptions options;
    options.max_new_tokens = 12;
    options.stop_token = -1;
    EXPECT_EQ(generate(*gpu, kPrompts, options), generate(*cpu, kPrompts, options)) << arch;
  }
}

// Speculative decoding on the device (TokenChoices: greedy rounds bring only ids to the host,
// top-k sampling the k best of each row, top-p with a repetition penalty whole rows) gives the
// CPU's tokens, greedy (which are the target's greedy tokens) and sampling; with an int8 target
// too.
TEST_F(ModelOnCuda, SpeculativeDecodingGivesTheCpusTokens) {
  // The draft is the target with its last block scaled down, by a factor per architecture that
  // leaves some proposals accepted and some rejected (gpt2 about 7 of 16, llama 7 of 15, greedy).
  for (const auto& [arch, draft_scale] : {std::pair<std::string, double>{"gpt2", 0.2}, {"llama", 0.9}}) {
    const ModelConfig c = small(arch);
    auto cpu = make(c, DType::f32, false), gpu = make(c, DType::f32, true);
    auto cpu_draft = make(c, DType::f32, false), gpu_draft = make(c, DType::f32, true);
    for (Transformer* m : {cpu.get(), gpu.get(), cpu_draft.get(), gpu_draft.get()}) randomize(*m);
    for (Transformer* m : {cpu_draft.get(), gpu_draft.get()})
      for (auto& p : m->params().all())
        if (p->name.starts_with("layers.1.")) ops::scale(p->value, draft_scale);
    for (const bool int8 : {false, true}) {
      if (int8) {
        cpu->quantize_int8();
        gpu->quantize_int8();
      }
      const std::vector<std::pair<std::string, SamplingConfig>> samplings = {
          {"greedy", {}},
          {"top-k", {.temperature = 0.9, .top_k = 5, .seed = 17}},
          {"top-p, penalty", {.temperature = 1.0, .top_p = 0.9, .repetition_penalty = 1.2, .seed = 9}}};
      for (const auto& [name, sampling] : samplings) {
        GenerateOptions options;
        options.max_new_tokens = 14;
        options.stop_token = -1;
        options.sampling = sampling;
        const bool sample = sampling.temperature > 0;
        const std::string what = arch + (int8 ? " int8 " : " ") + name;
        SpeculativeStats on_cpu, on_gpu;
        const std::vector<int32_t> want = generate_speculative(*cpu, *cpu_draft, kPrompts[1], options, 3, &on_cpu);
        EXPECT_EQ(generate_speculative(*gpu, *gpu_draft, kPrompts[1], options, 3, &on_gpu), want) << what;
        EXPECT_EQ(on_gpu.accepted, on_cpu.accepted) << what;
        EXPECT_GT(on_cpu.accepted, 0) << what;
        EXPECT_LT(on_cpu.accepted, on_cpu.proposed) << what;
        if (!sample) {
          EXPECT_EQ(want, generate(*cpu, {kPrompts[1]}, options)[0]) << what;
        }
      }
    }
  }
}

}  // namespace

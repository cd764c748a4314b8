// The whole model against finite differences (f64, every parameter), and the recompute modes
// against each other (bitwise).
#include <gtest/gtest.h>

#include "core/philox.h"
#include "core/random.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "model_testing.h"
#include "op_testing.h"

using namespace strata;

namespace {

using strata::testing::tiny;

// Token ids in [0, vocab) from Philox, with one ignored target to exercise the mask.
void make_batch(const ModelConfig& c, int64_t batch, int64_t seq, Tensor& ids, Tensor& targets) {
  strata::testing::make_token_batch(c.vocab_size, batch, seq, 7, ids, targets);
  targets.data<int32_t>()[1] = -1;
}

// Parameters are initialised larger than the training init (std 0.02) so every path carries a
// signal well above finite-difference noise; biases and norm gains get random values too.
void randomize(Transformer& model) {
  for (auto& p : model.params().all())
    fill_uniform(p->value, 3, philox::stream_key(p->name), -0.5, 0.5);
}

}  // namespace

class ModelGradient : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGradient, EveryParameterMatchesFiniteDifferences) {
  const ModelConfig config = tiny(GetParam());
  Transformer model(config, DType::f64);
  randomize(model);
  Tensor ids, targets;
  make_batch(config, 2, 5, ids, targets);

  model.params().zero_grads();
  model.forward(ids, targets);
  model.backward(1.0);
  for (auto& p : model.params().all()) {
    Tensor analytic = p->grad.contiguous();
    Tensor numeric = strata::testing::numerical_gradient(
        [&] {
          double loss = model.forward(ids, targets);
          return loss;
        },
        p->value);
    // Central differences in f64 with h = 1e-5: truncation ~1e-10 relative, rounding ~1e-11.
    EXPECT_LE(strata::testing::max_relative_error(analytic, numeric), 1e-6) << p->name;
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, ModelGradient, ::testing::Values("gpt2", "llama"));

TEST(Model, RecomputeModesGiveBitwiseIdenticalGradients) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const ModelConfig config = tiny(arch);
    Tensor ids, targets;
    make_batch(config, 2, 6, ids, targets);
    std::vector<std::vector<float>> grads[3];
    double losses[3];
    int mode_index = 0;
    for (Recompute mode : {Recompute::none, Recompute::selective, Recompute::full}) {
      Transformer model(config, DType::f32);
      model.params().initialize(1234);
      model.params().zero_grads();
      losses[mode_index] = model.forward(ids, targets, mode);
      model.backward(1.0);
      for (auto& p : model.params().all()) {
        const float* g = p->grad.data<float>();
        grads[mode_index].emplace_back(g, g + p->grad.numel());
      }
      ++mode_index;
    }
    for (int m = 1; m < 3; ++m) {
      EXPECT_EQ(losses[m], losses[0]) << arch << " mode " << m;
      ASSERT_EQ(grads[m].size(), grads[0].size());
      for (size_t i = 0; i < grads[0].size(); ++i)
        EXPECT_EQ(grads[m][i], grads[0][i]) << arch << " mode " << m << " parameter " << i;
    }
  }
}

TEST(Model, InitialisationIsLayoutIndependentAndScaled) {
  ModelConfig config = tiny("llama");
  config.n_layers = 4;
  Transformer a(config, DType::f32), b(config, DType::f32);
  a.params().initialize(99);
  b.params().initialize(99);
  for (size_t i = 0; i < a.params().all().size(); ++i)
    EXPECT_EQ(strata::testing::max_relative_error(a.params().all()[i]->value, b.params().all()[i]->value), 0.0);
  // A column slice of wq drawn on its own equals the same columns of the whole tensor.
  Parameter& wq = a.params().get("layers.1.attn.wq.weight");
  Tensor half = Tensor::empty({8, 4}, DType::f32);
  init_normal_slice(half, wq.global_shape, 1, 4, 99, philox::stream_key(wq.name), wq.init_std);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 4; ++c)
      EXPECT_EQ(half.data<float>()[r * 4 + c], wq.value.data<float>()[r * 8 + 4 + c]);
  EXPECT_EQ(a.params().get("layers.0.attn_norm.weight").value.data<float>()[0], 1.0f);
}

TEST(Model, ParameterCountMatchesTheRegistry) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const ModelConfig config = tiny(arch);
    Transformer model(config, DType::f32);
    EXPECT_EQ(count_model(config).params, model.params().local_numel()) << arch;
  }
  // GPT-2 124M: the published size (124,439,808 with the tied head).
  ModelConfig gpt2;
  gpt2.vocab_size = 50257;
  gpt2.n_layers = 12;
  gpt2.d_model = 768;
  gpt2.n_heads = 12;
  gpt2.n_kv_heads = 12;
  gpt2.d_ff = 3072;
  gpt2.norm = "layernorm";
  gpt2.activation = "gelu";
  gpt2.position = "learned";
  gpt2.tie_embeddings = true;
  gpt2.bias = true;
  EXPECT_EQ(count_model(gpt2).params, 124439808);
}

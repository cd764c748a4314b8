// The mixture-of-experts layer: the whole model against finite differences (f64, router
// included), the load-balancing loss on a routing made by hand, and token conservation with an
// independent count of the drops.
#include <gtest/gtest.h>

#include <cmath>

#include "core/philox.h"
#include "core/random.h"
#include "kernels/ops.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "model_testing.h"
#include "op_testing.h"

using namespace strata;

namespace {

// The tiny model of model_testing.h with every FFN a mixture of 4 experts (d_ff 6, 2 kv heads).
ModelConfig tiny_moe(const std::string& arch, double capacity_factor) {
  ModelConfig c = strata::testing::tiny(arch);
  c.n_kv_heads = 2;
  c.d_ff = 6;
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.capacity_factor = capacity_factor;
  c.moe.aux_loss_coef = 0.3;  // large, so the auxiliary gradients weigh in the check
  c.moe.z_loss_coef = 0.05;
  c.moe.every = 1;
  return c;
}

struct GradientCase {
  const char* name;
  std::string arch;
  double capacity_factor;
  int64_t top_k = 2;
};

class MoeGradient : public ::testing::TestWithParam<GradientCase> {};

}  // namespace

TEST_P(MoeGradient, EveryParameterMatchesFiniteDifferences) {
  const GradientCase gc = GetParam();
  ModelConfig config = tiny_moe(gc.arch, gc.capacity_factor);
  config.moe.top_k = gc.top_k;
  Transformer model(config, DType::f64);
  for (auto& p : model.params().all())
    fill_uniform(p->value, 5, philox::stream_key(p->name), -0.5, 0.5);
  Tensor ids, targets;
  strata::testing::make_token_batch(config.vocab_size, 2, 5, 9, ids, targets);
  // The objective: cross-entropy plus the weighted auxiliary losses.
  auto objective = [&] { return model.forward(ids, targets) + model.aux_loss(); };

  model.params().zero_grads();
  objective();
  int64_t dropped = 0;
  for (const auto& [layer, r] : model.routing_log()) dropped += r.dropped;
  if (gc.capacity_factor > 0) {
    EXPECT_GT(dropped, 0) << "the capacity case must drop something";
  } else {
    EXPECT_EQ(dropped, 0);
  }
  model.backward(1.0);
  int checked = 0;
  for (auto& p : model.params().all()) {
    Tensor analytic = p->grad.contiguous();
    Tensor numeric = strata::testing::numerical_gradient(objective, p->value);
    if (p->name.find("attn.wk.bias") != std::string::npos) {
      // Exactly zero in exact arithmetic (q.b_k shifts every score of a query alike, and softmax
      // ignores that): both sides are rounding noise, so compare their size, not their ratio.
      EXPECT_LE(strata::testing::max_relative_error(analytic, numeric, 1.0), 1e-9) << p->name;
      continue;
    }
    // Central differences in f64 with h = 1e-5, as the dense model's check. Routing (top-k,
    // capacity) is piecewise constant in the parameters: a step of 1e-5 does not cross a choice
    // here (the check would fail loudly if it did).
    EXPECT_LE(strata::testing::max_relative_error(analytic, numeric), 1e-6) << gc.name << " " << p->name;
    checked += p->name.find(".router.") != std::string::npos;
  }
  EXPECT_EQ(checked, 2) << "both layers' routers are checked";
}

INSTANTIATE_TEST_SUITE_P(
    Moe, MoeGradient,
    ::testing::Values(GradientCase{"llama_dropless", "llama", 0.0},
                      GradientCase{"llama_capacity1", "llama", 1.0},
                      GradientCase{"gpt2_capacity1", "gpt2", 1.0},
                      GradientCase{"llama_top1", "llama", 1.0, 1}),
    [](const ::testing::TestParamInfo<GradientCase>& param_info) {
      return std::string(param_info.param.name);
    });

TEST(Moe, TopOneRouterLearnsFromTheLossAlone) {
  // With the auxiliary losses off, the router's gradient comes from the task loss only: with
  // top_k 1 the gate is p itself, so it must not vanish.
  ModelConfig config = tiny_moe("llama", 0.0);
  config.moe.top_k = 1;
  config.moe.aux_loss_coef = 0;
  config.moe.z_loss_coef = 0;
  Transformer model(config, DType::f64);
  for (auto& p : model.params().all())
    fill_uniform(p->value, 5, philox::stream_key(p->name), -0.5, 0.5);
  Tensor ids, targets;
  strata::testing::make_token_batch(config.vocab_size, 2, 5, 9, ids, targets);
  model.params().zero_grads();
  model.forward(ids, targets);
  model.backward(1.0);
  EXPECT_GT(ops::sum_squares(model.params().get("layers.0.moe.router.weight").grad), 1e-12);
}

TEST(Moe, LoadBalancingLossOnAHandMadeRouting) {
  // One MoE layer, d_model 2, 2 experts, top-1, router weight = identity: token (a, b) scores
  // (a, b). Tokens (2, 0), (2, 0), (0, 1): probabilities p1 = (e^2, 1)/(e^2 + 1) twice and
  // p3 = (1, e)/(1 + e); first choices: expert 0, 0, 1, so f = (2/3, 1/3),
  // P = ((2 e^2/(e^2+1) + 1/(1+e)) / 3, (2/(e^2+1) + e/(1+e)) / 3), L_aux = 2 (f0 P0 + f1 P1).
  ModelConfig c;
  c.d_model = 2;
  c.d_ff = 4;
  c.n_layers = 1;
  c.moe.n_experts = 2;
  c.moe.top_k = 1;
  c.moe.capacity_factor = 0.0;
  c.moe.every = 1;
  ParameterRegistry registry;
  MoeLayer layer(registry, "moe", c, DType::f64);
  registry.initialize(1);
  Tensor& router = registry.get("moe.router.weight").value;
  const double identity[] = {1, 0, 0, 1};
  for (int i = 0; i < 4; ++i) router.data<double>()[i] = identity[i];
  Tensor x = Tensor::from_vector(std::vector<double>{2, 0, 2, 0, 0, 1}, {3, 2});
  Tensor y = Tensor::empty({3, 2}, DType::f64);
  MoeSaved saved;
  layer.forward(x, y, saved);
  const double e = std::exp(1.0), e2 = std::exp(2.0);
  const double p0 = (2 * e2 / (e2 + 1) + 1 / (1 + e)) / 3, p1 = (2 / (e2 + 1) + e / (1 + e)) / 3;
  const double expected = 2 * (2.0 / 3 * p0 + 1.0 / 3 * p1);
  EXPECT_NEAR(saved.routing.aux_loss, expected, 1e-14);
  // z-loss: mean of lse^2 with lse = log(e^2 + 1), log(e^2 + 1), log(1 + e).
  const double l1 = std::log(e2 + 1), l3 = std::log(1 + e);
  EXPECT_NEAR(saved.routing.z_loss, (2 * l1 * l1 + l3 * l3) / 3, 1e-14);
  EXPECT_EQ(saved.routing.chosen, (std::vector<int64_t>{2, 1}));
}

TEST(Moe, EveryKeptTokenChoiceIsProcessedOnceAndDropsMatchAnIndependentCount) {
  ModelConfig c = tiny_moe("llama", 0.5);
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  ParameterRegistry registry;
  MoeLayer layer(registry, "moe", c, DType::f64);
  for (auto& p : registry.all()) fill_uniform(p->value, 7, philox::stream_key(p->name), -1, 1);
  const int64_t rows = 37;
  Tensor x = Tensor::empty({rows, c.d_model}, DType::f64);
  fill_uniform(x, 8, 1, -2, 2);
  Tensor y = Tensor::empty({rows, c.d_model}, DType::f64);
  MoeSaved s;
  layer.forward(x, y, s);

  // Independently: capacity ceil(0.5 * 37 * 2 / 4) = 10; fill choice 0 of every token, then
  // choice 1, in token order, from the saved choices.
  const int64_t capacity = 10;
  const int32_t* expert = s.expert.data<int32_t>();
  const int32_t* slot = s.slot.data<int32_t>();
  const double* gate = s.gate.data<double>();
  std::vector<int64_t> count(4, 0);
  int64_t dropped = 0;
  std::vector<int32_t> place(static_cast<size_t>(rows * 2), -1);
  for (int64_t j = 0; j < 2; ++j)
    for (int64_t r = 0; r < rows; ++r) {
      const auto e = static_cast<size_t>(expert[r * 2 + j]);
      if (count[e] < capacity)
        place[static_cast<size_t>(r * 2 + j)] = static_cast<int32_t>(count[e]++);
      else
        ++dropped;
    }
  EXPECT_EQ(s.routing.dropped, dropped);
  EXPECT_EQ(s.routing.load, count);
  // Each kept token-choice has its own place among its expert's rows, in fill order.
  EXPECT_EQ(std::vector<int32_t>(slot, slot + rows * 2), place);
  // A token's two choices are distinct experts, and its gates sum to 1.
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NE(expert[r * 2], expert[r * 2 + 1]);
    EXPECT_NEAR(gate[r * 2] + gate[r * 2 + 1], 1.0, 1e-15);
  }
}

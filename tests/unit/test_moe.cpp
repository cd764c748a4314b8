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
#include "unit/op_harness.h"

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
  const double* losses = saved.losses.data<double>();
  EXPECT_NEAR(losses[0], expected, 1e-14);
  // z-loss: mean of lse^2 with lse = log(e^2 + 1), log(e^2 + 1), log(1 + e).
  const double l1 = std::log(e2 + 1), l3 = std::log(1 + e);
  EXPECT_NEAR(losses[1], (2 * l1 * l1 + l3 * l3) / 3, 1e-14);
  const int64_t* counts = saved.counts.data<int64_t>();
  EXPECT_EQ(std::vector<int64_t>(counts, counts + 2), (std::vector<int64_t>{2, 1}));
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
  const int32_t* row = s.row.data<int32_t>();
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
  const int64_t* counts = s.counts.data<int64_t>();
  int64_t kept = 0;
  for (int64_t e = 0; e < 4; ++e) kept += counts[4 + e];
  EXPECT_EQ(rows * 2 - kept, dropped);
  EXPECT_EQ(std::vector<int64_t>(counts + 4, counts + 8), count);
  // Each kept token-choice has its own place among its expert's rows, in fill order: packed by
  // load on the CPU, so its row is its place after the loads of the experts before its own.
  std::vector<int64_t> start(4, 0);
  for (int64_t e = 1; e < 4; ++e) start[static_cast<size_t>(e)] = start[static_cast<size_t>(e - 1)] + count[static_cast<size_t>(e - 1)];
  for (int64_t choice = 0; choice < rows * 2; ++choice) {
    const auto at = static_cast<size_t>(choice);
    if (place[at] >= 0) place[at] += static_cast<int32_t>(start[static_cast<size_t>(expert[choice])]);
  }
  EXPECT_EQ(std::vector<int32_t>(row, row + rows * 2), place);
  EXPECT_FALSE(s.padded) << "the CPU packs by load";
  // A token's two choices are distinct experts, and its gates sum to 1.
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NE(expert[r * 2], expert[r * 2 + 1]);
    EXPECT_NEAR(gate[r * 2] + gate[r * 2 + 1], 1.0, 1e-15);
  }
}

// The fixed layout (capacity rows an expert, zero padding) moves the same rows as the layout
// packed by load, so combine, combine's backward and dispatch's backward give the same results
// bit for bit: each token's sum takes the same rows in the same order.
TEST(Moe, TheFixedLayoutGivesWhatPackingByLoadGives) {
  const int64_t rows = 41, E = 5, k = 2, d = 7, capacity = 12;  // 82 choices, 60 places: drops
  Tensor scores = Tensor::empty({rows, E}, DType::f64), x = Tensor::empty({rows, d}, DType::f64),
         dy = Tensor::empty({rows, d}, DType::f64);
  fill_uniform(scores, 3, 1, -2, 2);
  fill_uniform(x, 3, 2, -1, 1);
  fill_uniform(dy, 3, 3, -1, 1);
  Tensor probs = Tensor::empty({rows, E}, DType::f64), lse = Tensor::empty({rows}, DType::f64),
         expert = Tensor::empty({rows, k}, DType::i32), gate = Tensor::empty({rows, k}, DType::f64);
  ops::moe_route(scores, k, probs, lse, expert, gate);
  struct Out {
    Tensor row, counts, y, dgate, dx;
  };
  auto run = [&](bool fixed) {
    Out o{Tensor::empty({rows, k}, DType::i32), Tensor::empty({2, E}, DType::i64),
          Tensor::empty({rows, d}, DType::f64), Tensor::empty({rows, k}, DType::f64),
          Tensor::empty({rows, d}, DType::f64)};
    ops::moe_capacity(expert, E, capacity, fixed ? capacity : 0, o.row, o.counts);
    int64_t n = fixed ? E * capacity : 0;
    for (int64_t e = 0; e < E && !fixed; ++e) n += o.counts.data<int64_t>()[E + e];
    Tensor packed = Tensor::zeros({n, d}, DType::f64), dout = Tensor::zeros({n, d}, DType::f64);
    ops::moe_dispatch(x, o.row, packed);
    // The identity as every expert, times 2 so the rows differ from the inputs.
    ops::scale(packed, 2.0);
    ops::moe_combine(packed, o.row, gate, o.y);
    ops::moe_combine_backward(dy, packed, o.row, gate, dout, o.dgate);
    ops::moe_dispatch_backward(dout, o.row, nullptr, o.dx);
    return o;
  };
  const Out packed = run(false), fixed = run(true);
  const int32_t *rp = packed.row.data<int32_t>(), *rf = fixed.row.data<int32_t>();
  const int32_t* ex = expert.data<int32_t>();
  int64_t dropped = 0;
  std::vector<int64_t> start(E, 0);
  for (int64_t e = 1; e < E; ++e) start[e] = start[e - 1] + packed.counts.data<int64_t>()[E + e - 1];
  for (int64_t c = 0; c < rows * k; ++c) {
    ASSERT_EQ(rp[c] < 0, rf[c] < 0) << "choice " << c << " dropped in one layout only";
    if (rp[c] < 0) {
      ++dropped;
      continue;
    }
    // The same place within the expert's block, the block at e * capacity.
    EXPECT_EQ(rf[c] - ex[c] * capacity, rp[c] - start[ex[c]]) << "choice " << c;
  }
  EXPECT_GT(dropped, 0) << "the capacity drops some choices";
  EXPECT_EQ(strata::testing::values(packed.counts), strata::testing::values(fixed.counts));
  EXPECT_EQ(strata::testing::values(packed.y), strata::testing::values(fixed.y));
  EXPECT_EQ(strata::testing::values(packed.dgate), strata::testing::values(fixed.dgate));
  EXPECT_EQ(strata::testing::values(packed.dx), strata::testing::values(fixed.dx));
}

// The routing sums add each forward's counts and losses: the layout of the metrics' one read.
TEST(Moe, RoutingAccumulateAddsCountsAndLosses) {
  Tensor counts = Tensor::from_vector(std::vector<int64_t>{3, 1, 2, 1}, {2, 2}),
         losses = Tensor::from_vector(std::vector<double>{0.5, 0.25}, {2});
  Tensor sum = Tensor::zeros({6}, DType::f64);
  ops::moe_routing_accumulate(counts, losses, sum);
  ops::moe_routing_accumulate(counts, losses, sum);
  const double* s = sum.data<double>();
  EXPECT_EQ(std::vector<double>(s, s + 6), (std::vector<double>{6, 2, 4, 2, 1.0, 0.5}));
  Tensor wrong = Tensor::zeros({5}, DType::f64);
  strata::testing::expect_error([&] { ops::moe_routing_accumulate(counts, losses, wrong); },
                                {"moe_routing_accumulate", "'sum'"});
}

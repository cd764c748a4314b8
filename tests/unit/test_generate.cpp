// Inference (infer/generate.h, Transformer::forward_cached): logits with the KV cache against a
// full recompute, split decode attention against unsplit, the sampling filters' exact support and
// a chi-square test of their draws, and reproducible sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/random.h"
#include "infer/generate.h"
#include "kernels/ops.h"
#include "model/linear.h"
#include "model_testing.h"

using namespace strata;
using strata::testing::tiny;

namespace {

// max |a - b| / max |b| over two logit tensors (as f64).
double relative_error(const Tensor& a, const Tensor& b) {
  Tensor x = Tensor::empty(a.shape(), DType::f64), y = Tensor::empty(b.shape(), DType::f64);
  ops::cast(a, x);
  ops::cast(b, y);
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    diff = std::max(diff, std::abs(x.data<double>()[i] - y.data<double>()[i]));
    scale = std::max(scale, std::abs(y.data<double>()[i]));
  }
  return diff / scale;
}

// The full model's logits [len, vocab] for one sequence, without a cache.
Tensor recompute(Transformer& model, const std::vector<int32_t>& tokens) {
  const auto len = static_cast<int64_t>(tokens.size());
  Tensor ids = Tensor::from_vector(tokens, {1, len});
  model.forward(ids, ids, Recompute::full);
  return model.logits().contiguous();
}

}  // namespace

// Every prefill row and every decode step's logits equal a recompute of the whole sequence, for
// two prompts of different lengths prefilled together (f32; the sums run in another order, so
// within 1e-5 relative).
TEST(Generate, CachedLogitsEqualAFullRecompute) {
  for (const std::string arch : {"gpt2", "llama"}) {
    Transformer model(tiny(arch), DType::f32);
    model.params().initialize(7);
    std::vector<std::vector<int32_t>> seqs = {{1, 4, 2, 9, 3}, {7, 0, 5}};
    KvCache cache = model.make_kv_cache(2, 8);
    std::vector<int32_t> ids = seqs[0];
    ids.insert(ids.end(), seqs[1].begin(), seqs[1].end());
    const std::vector<CacheSegment> prefill = {{0, 5, 0}, {1, 3, 0}};
    const Tensor all = model.forward_cached(Tensor::from_vector(ids, {8}), prefill, cache, false);
    EXPECT_LE(relative_error(all.slice(0, 0, 5).contiguous(), recompute(model, seqs[0])), 1e-5) << arch;
    EXPECT_LE(relative_error(all.slice(0, 5, 8).contiguous(), recompute(model, seqs[1])), 1e-5) << arch;
    // Three decode steps: one new token per sequence, each against the cache.
    for (int32_t step = 0; step < 3; ++step) {
      const std::vector<int32_t> next = {static_cast<int32_t>((3 * step + 2) % 11), static_cast<int32_t>((5 * step + 1) % 11)};
      const std::vector<CacheSegment> decode = {{0, 1, static_cast<int64_t>(seqs[0].size())},
                                                {1, 1, static_cast<int64_t>(seqs[1].size())}};
      const Tensor logits = model.forward_cached(Tensor::from_vector(next, {2}), decode, cache, true);
      for (size_t b = 0; b < 2; ++b) {
        seqs[b].push_back(next[b]);
        const Tensor full = recompute(model, seqs[b]);
        const auto last = static_cast<int64_t>(seqs[b].size()) - 1;
        EXPECT_LE(relative_error(logits.slice(0, static_cast<int64_t>(b), static_cast<int64_t>(b) + 1).contiguous(),
                                 full.slice(0, last, last + 1).contiguous()),
                  1e-5)
            << arch << " step " << step << " sequence " << b;
      }
    }
  }
}

TEST(Generate, SamplingFiltersLeaveExactlyTheExpectedSupport) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.1f, -1.0f, 3.0f, 1.5f};
  auto support = [](const std::vector<double>& p) {
    std::vector<int> s;
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i] > 0) s.push_back(static_cast<int>(i));
    return s;
  };
  SamplingConfig c;
  c.temperature = 0;
  EXPECT_EQ(support(sampling_distribution(logits, c, {})), std::vector<int>{5});  // greedy: the argmax
  c.temperature = 1.0;
  EXPECT_EQ(support(sampling_distribution(logits, c, {})).size(), logits.size());
  c.top_k = 3;  // the three largest logits: ids 5, 0, 6
  EXPECT_EQ(support(sampling_distribution(logits, c, {})), (std::vector<int>{0, 5, 6}));
  c.top_k = 0;
  // top-p by hand: softmax probabilities in descending order, the shortest prefix reaching 0.8.
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(logits[i]);
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  std::vector<int> expected;
  double mass = 0;
  for (int i : order) {
    expected.push_back(i);
    mass += p[static_cast<size_t>(i)] / sum;
    if (mass >= 0.8) break;
  }
  std::sort(expected.begin(), expected.end());
  c.top_p = 0.8;
  const std::vector<double> filtered = sampling_distribution(logits, c, {});
  EXPECT_EQ(support(filtered), expected);
  EXPECT_NEAR(std::accumulate(filtered.begin(), filtered.end(), 0.0), 1.0, 1e-12);
  // The repetition penalty divides a seen token's positive logit: 3.0 / 2 = 1.5 < 2.0, so the
  // greedy choice moves from id 5 to id 0.
  SamplingConfig greedy;
  greedy.repetition_penalty = 2.0;
  const std::vector<int32_t> seen = {5};
  EXPECT_EQ(support(sampling_distribution(logits, greedy, seen)), std::vector<int>{0});
}

// 20000 draws from a top-k 4, temperature 0.8 distribution: Pearson's chi-square against it,
// 3 degrees of freedom, below 16.27 (the 0.1% critical value). Seeded, so the test is fixed.
TEST(Generate, SampledTokensFollowTheFilteredDistribution) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.1f, -1.0f, 3.0f, 1.5f};
  SamplingConfig c;
  c.temperature = 0.8;
  c.top_k = 4;
  const std::vector<double> p = sampling_distribution(logits, c, {});
  const int n = 20000;
  std::vector<int> counts(p.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(draw_token(p, sampling_uniform(11, 0, static_cast<uint64_t>(i))))];
  double chi2 = 0;
  int cells = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the support";
      continue;
    }
    const double expected = n * p[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++cells;
  }
  EXPECT_EQ(cells, 4);
  EXPECT_LT(chi2, 16.27);
}

TEST(Generate, SameSeedSameOutput) {
  Transformer model(tiny("llama"), DType::f32);
  model.params().initialize(3);
  GenerateOptions o;
  o.max_new_tokens = 4;
  o.sampling.temperature = 1.0;
  o.sampling.top_k = 5;
  o.sampling.seed = 42;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4}};
  const auto a = generate(model, prompts, o);
  const auto b = generate(model, prompts, o);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].size(), 4u);
  // max_seq_len 8 leaves the 3-token prompt room for 5 tokens and the 1-token one for 7; asking for
  // more stops each at the cache's end.
  o.max_new_tokens = 10;
  const auto c = generate(model, prompts, o);
  EXPECT_EQ(c[0].size(), 5u);
  EXPECT_EQ(c[1].size(), 7u);
}

// Speculative decoding with greedy sampling gives exactly the target's greedy tokens, whatever the
// draft proposes (here: a draft of other weights, so many proposals are rejected).
TEST(Generate, SpeculativeGreedyEqualsTargetGreedy) {
  for (const std::string arch : {"gpt2", "llama"}) {
    Transformer target(tiny(arch), DType::f32), draft(tiny(arch), DType::f32);
    target.params().initialize(1);
    draft.params().initialize(2);
    GenerateOptions o;
    o.max_new_tokens = 6;
    for (int64_t k : {1, 2, 4}) {
      SpeculativeStats stats;
      const std::vector<int32_t> prompt = {3, 1, 4};
      const auto plain = generate(target, {prompt}, o)[0];
      EXPECT_EQ(generate_speculative(target, draft, prompt, o, k, &stats), plain) << arch << " k " << k;
      EXPECT_GT(stats.proposed, 0);
      // The target itself as the draft: every proposal accepted.
      SpeculativeStats self;
      EXPECT_EQ(generate_speculative(target, target, prompt, o, k, &self), plain);
      EXPECT_EQ(self.accepted, self.proposed) << arch << " k " << k;
    }
  }
}

// With sampling, the tokens follow the target's distribution: over 3000 seeds, the first two
// tokens' frequencies against the exact target probabilities (the second token's marginal
// summed over the first), Pearson's chi-square on cells of expected count >= 5, below the 0.1%
// critical value for their degrees of freedom.
TEST(Generate, SpeculativeSamplingFollowsTheTarget) {
  Transformer target(tiny("llama"), DType::f32), draft(tiny("llama"), DType::f32);
  target.params().initialize(1);
  draft.params().initialize(2);
  const std::vector<int32_t> prompt = {3, 1, 4};
  GenerateOptions o;
  o.max_new_tokens = 2;
  o.sampling.temperature = 0.5;
  // The exact distributions from the target alone.
  const int vocab = 11;
  auto next_probs = [&](const std::vector<int32_t>& seq) {
    KvCache cache = target.make_kv_cache(1, 8);
    const std::vector<CacheSegment> seg = {{0, static_cast<int64_t>(seq.size()), 0}};
    const Tensor logits = target.forward_cached(Tensor::from_vector(seq, {static_cast<int64_t>(seq.size())}), seg, cache, true);
    return sampling_distribution(std::span<const float>(logits.data<float>(), vocab), o.sampling, seq);
  };
  const std::vector<double> p1 = next_probs(prompt);
  std::vector<double> p2(vocab, 0.0);
  for (int x = 0; x < vocab; ++x) {
    std::vector<int32_t> seq = prompt;
    seq.push_back(x);
    const std::vector<double> p = next_probs(seq);
    for (int y = 0; y < vocab; ++y) p2[static_cast<size_t>(y)] += p1[static_cast<size_t>(x)] * p[static_cast<size_t>(y)];
  }
  const int n = 3000;
  std::vector<int> c1(vocab, 0), c2(vocab, 0);
  SpeculativeStats stats;
  for (int s = 0; s < n; ++s) {
    o.sampling.seed = static_cast<uint64_t>(s);
    const auto out = generate_speculative(target, draft, prompt, o, 2, &stats);
    ASSERT_EQ(out.size(), 2u);
    ++c1[static_cast<size_t>(out[0])];
    ++c2[static_cast<size_t>(out[1])];
  }
  // 0.1% critical values of chi-square for 1..10 degrees of freedom.
  const double critical[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59};
  for (const auto& [p, c, which] : {std::tuple{p1, c1, "first"}, std::tuple{p2, c2, "second"}}) {
    double chi2 = 0;
    int cells = 0;
    for (int t = 0; t < vocab; ++t) {
      const double expected = n * p[static_cast<size_t>(t)];
      if (expected < 5) continue;
      chi2 += (c[static_cast<size_t>(t)] - expected) * (c[static_cast<size_t>(t)] - expected) / expected;
      ++cells;
    }
    ASSERT_GE(cells, 3) << which;
    EXPECT_LT(chi2, critical[cells - 1]) << which << " token: chi-square " << chi2 << " over " << cells << " cells";
  }
  // The draft is another model: some proposals are rejected, some accepted.
  EXPECT_GT(stats.accepted, 0);
  EXPECT_LT(stats.accepted, stats.proposed);
}

// Weight-only int8: each weight lands within half a step (its row's max |w| / 127, halved) of its
// value, read back through a forward of the identity (y = I W^T = W^T); the model's logits move
// little; backward through a quantised linear is refused.
TEST(Generate, Int8WeightsStayWithinHalfAStep) {
  ParameterRegistry registry;
  Linear linear(registry, LinearSpec{"probe", 24, 10, false, 0.5}, DType::f32);
  registry.initialize(9);
  const Tensor w = registry.get("probe.weight").value.contiguous();  // [10, 24]
  Tensor original = Tensor::empty(w.shape(), DType::f32);
  original.copy_from(w);
  const auto [before_bytes, after_bytes] = linear.quantize_int8();
  EXPECT_EQ(before_bytes, 10 * 24 * 4);
  EXPECT_EQ(after_bytes, 10 * 24 + 10 * 4);  // a byte a weight, an f32 scale a row
  EXPECT_FALSE(registry.get("probe.weight").value.defined());
  Tensor eye = Tensor::zeros({24, 24}, DType::f32), wt = Tensor::empty({24, 10}, DType::f32);
  for (int64_t i = 0; i < 24; ++i) eye.data<float>()[i * 24 + i] = 1.0f;
  linear.forward(eye, wt);
  for (int64_t r = 0; r < 10; ++r) {
    float top = 0;
    for (int64_t c = 0; c < 24; ++c) top = std::max(top, std::abs(original.data<float>()[r * 24 + c]));
    for (int64_t c = 0; c < 24; ++c)
      EXPECT_LE(std::abs(wt.data<float>()[c * 10 + r] - original.data<float>()[r * 24 + c]), top / 254.0f * 1.0001f)
          << r << ", " << c;
  }
  // A whole model: the logits move, a little.
  Transformer model(tiny("llama"), DType::f32);
  model.params().initialize(4);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  const std::vector<CacheSegment> seg = {{0, 5, 0}};
  KvCache cache = model.make_kv_cache(1, 8);
  const Tensor before = model.forward_cached(Tensor::from_vector(tokens, {5}), seg, cache, false).contiguous();
  model.quantize_int8();
  KvCache cache2 = model.make_kv_cache(1, 8);
  const Tensor after = model.forward_cached(Tensor::from_vector(tokens, {5}), seg, cache2, false).contiguous();
  EXPECT_GT(relative_error(after, before), 0.0);
  EXPECT_LE(relative_error(after, before), 0.05);
  Tensor ids = Tensor::from_vector(tokens, {1, 5});
  model.forward(ids, ids);
  EXPECT_THROW(model.backward(1.0), Error);
}

// A conversation's second reply, with the first turns in the cache, is the reply to the whole
// conversation generated from scratch (greedy).
TEST(Generate, ConversationContinuesFromItsCache) {
  Transformer model(tiny("gpt2"), DType::f32);
  model.params().initialize(6);
  GenerateOptions o;
  o.max_new_tokens = 2;
  Conversation chat(model);
  const std::vector<int32_t> first = {2, 7}, second = {5};
  const std::vector<int32_t> r1 = chat.turn(first, o);
  const std::vector<int32_t> r2 = chat.turn(second, o);
  std::vector<int32_t> whole = first;
  whole.insert(whole.end(), r1.begin(), r1.end());
  whole.insert(whole.end(), second.begin(), second.end());
  EXPECT_EQ(r2, generate(model, {whole}, o)[0]);
  EXPECT_EQ(chat.tokens().size(), whole.size() + r2.size());
  EXPECT_THROW(chat.turn(std::vector<int32_t>(8, 1), o), Error);  // past max_seq_len 8
}

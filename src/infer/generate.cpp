#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/philox.h"
#include "io/checkpoint.h"
#include "kernels/ops.h"

namespace strata {

std::vector<double> sampling_distribution(std::span<const float> logits, const SamplingConfig& config,
                                          std::span<const int32_t> seen) {
  const size_t n = logits.size();
  std::vector<double> z(logits.begin(), logits.end());
  if (config.repetition_penalty != 1.0) {
    std::vector<bool> done(n, false);
    for (int32_t t : seen) {
      const auto i = static_cast<size_t>(t);
      if (i >= n || done[i]) continue;
      done[i] = true;
      z[i] = z[i] > 0 ? z[i] / config.repetition_penalty : z[i] * config.repetition_penalty;
    }
  }
  std::vector<double> p(n, 0.0);
  if (config.temperature <= 0) {
    p[static_cast<size_t>(std::max_element(z.begin(), z.end()) - z.begin())] = 1.0;
    return p;
  }
  const double top = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i] = std::exp((z[i] - top) / config.temperature);
  for (double& x : p) x /= sum;
  // Order by probability (ties by id) to cut top-k and top-p.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  size_t keep = n;
  if (config.top_k > 0) keep = std::min(keep, static_cast<size_t>(config.top_k));
  if (config.top_p < 1.0) {
    double mass = 0;
    for (size_t i = 0; i < keep; ++i) {
      mass += p[order[i]];
      if (mass >= config.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[order[i]];
  std::vector<double> out(n, 0.0);
  for (size_t i = 0; i < keep; ++i) out[order[i]] = p[order[i]] / kept;
  return out;
}

int32_t draw_token(const std::vector<double>& probs, double u) {
  double cumulative = 0;
  int32_t last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    cumulative += probs[i];
    if (u < cumulative) return last;
  }
  return last;  // rounding left u above the total: the last token with mass
}

double sampling_uniform(uint64_t seed, uint64_t sequence, uint64_t step) {
  const philox::Block b = philox::words(seed, 0x5a3d1e00u + sequence, step);
  const uint64_t bits = (static_cast<uint64_t>(b.v[0]) << 21) ^ (b.v[1] >> 11);
  return static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) / static_cast<double>(uint64_t{1} << 53);
}

void load_weights(Transformer& model, const std::string& checkpoint) {
  std::vector<CheckpointEntry> entries;
  for (auto& p : model.params().all()) {
    std::vector<int64_t> offset(p->global_shape.size(), 0);
    if (!p->shard.replicated()) offset[static_cast<size_t>(p->shard.dim)] = p->shard.start;
    entries.push_back({p->name, p->global_shape, offset, &p->value, true});
  }
  load_checkpoint(checkpoint, entries);
}

std::vector<std::vector<int32_t>> generate(const Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t, int32_t)>& on_token) {
  const auto batch = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int32_t>> out(prompts.size());
  if (batch == 0) return out;
  int64_t longest = 0;
  for (const auto& p : prompts) {
    STRATA_CHECK(!p.empty(), "generate: an empty prompt (give at least one token)");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  }
  const int64_t max_len = std::min(model.config().max_seq_len, longest + options.max_new_tokens);
  STRATA_CHECK(longest < model.config().max_seq_len, "generate: a prompt of ", longest,
               " tokens leaves no room in model.max_seq_len = ", model.config().max_seq_len);
  KvCache cache = model.make_kv_cache(batch, max_len);
  std::vector<int64_t> length(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  std::vector<std::vector<int32_t>> seen = prompts;

  // Prefill: every prompt in one forward, logits of each one's last token.
  std::vector<int32_t> ids;
  std::vector<CacheSegment> segments;
  for (size_t b = 0; b < prompts.size(); ++b) {
    ids.insert(ids.end(), prompts[b].begin(), prompts[b].end());
    segments.push_back({static_cast<int64_t>(b), static_cast<int64_t>(prompts[b].size()), 0});
    length[b] = static_cast<int64_t>(prompts[b].size());
  }
  std::vector<size_t> active(prompts.size());
  std::iota(active.begin(), active.end(), 0);
  for (int64_t step = 0; step < options.max_new_tokens && !active.empty(); ++step) {
    Tensor id_tensor = Tensor::from_vector(ids, {static_cast<int64_t>(ids.size())});
    const Tensor logits = model.forward_cached(id_tensor, segments, cache, /*last_only=*/true);
    Tensor f32 = Tensor::empty(logits.shape(), DType::f32);
    ops::cast(logits, f32);
    const int64_t vocab = logits.size(1);
    std::vector<size_t> next_active;
    ids.clear();
    segments.clear();
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t b = active[j];
      std::span<const float> row(f32.data<float>() + static_cast<int64_t>(j) * vocab, static_cast<size_t>(vocab));
      const std::vector<double> probs = sampling_distribution(row, options.sampling, seen[b]);
      const int32_t token = draw_token(probs, sampling_uniform(options.sampling.seed, b, static_cast<uint64_t>(step)));
      out[b].push_back(token);
      seen[b].push_back(token);
      if (on_token) on_token(b, token);
      // Stops at the stop token, or when the sequence (prompt and new tokens) fills max_len.
      if (token == options.stop_token || length[b] + 1 >= max_len) continue;
      ids.push_back(token);
      segments.push_back({static_cast<int64_t>(b), 1, length[b]});
      ++length[b];
      next_active.push_back(b);
    }
    active = std::move(next_active);
  }
  return out;
}

}  // namespace strata

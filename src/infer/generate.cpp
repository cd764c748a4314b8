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

Tensor host_f32(const Tensor& logits) {
  Tensor f32 = Tensor::empty(logits.shape(), DType::f32, allocator_of(logits));
  ops::cast(logits, f32);
  return f32.to_cpu();
}

int32_t draw_token(const SparseDistribution& probs, double u) {
  double cumulative = 0;
  int32_t last = 0;
  for (const auto& [token, p] : probs) {
    if (p <= 0) continue;
    last = token;
    cumulative += p;
    if (u < cumulative) return last;
  }
  return last;
}

double probability_of(const SparseDistribution& probs, int32_t token) {
  const auto at = std::lower_bound(probs.begin(), probs.end(), token,
                                   [](const std::pair<int32_t, double>& e, int32_t t) { return e.first < t; });
  return at != probs.end() && at->first == token ? at->second : 0.0;
}

TokenChoices::TokenChoices(const Tensor& logits, const SamplingConfig& sampling) : sampling_(sampling) {
  vocab_ = logits.size(1);
  // On a GPU, when the distribution depends on the k largest logits only (greedy; top-k without
  // top-p or a repetition penalty, which look at the whole row), only those k values and ids
  // come to the host; under greedy only the ids.
  const bool greedy = sampling.temperature <= 0;
  const bool few = sampling.repetition_penalty == 1.0 && (greedy || (sampling.top_k > 0 && sampling.top_p >= 1.0));
  if (logits.device().is_cpu() || !few) {
    rows_ = host_f32(logits);
    return;
  }
  k_ = greedy ? 1 : std::min<int64_t>(sampling.top_k, vocab_);
  Allocator& device = allocator_of(logits);
  Tensor values = Tensor::empty({logits.size(0), k_}, logits.dtype(), device);
  Tensor ids = Tensor::empty({logits.size(0), k_}, DType::i32, device);
  ops::topk(logits, k_, values, ids);
  if (!greedy) rows_ = host_f32(values);
  ids_ = ids.to_cpu();
}

SparseDistribution TokenChoices::distribution(int64_t row, std::span<const int32_t> seen) const {
  SparseDistribution out;
  if (k_ == 0) {
    std::span<const float> z(rows_.data<float>() + row * vocab_, static_cast<size_t>(vocab_));
    const std::vector<double> dense = sampling_distribution(z, sampling_, seen);
    for (size_t t = 0; t < dense.size(); ++t)
      if (dense[t] > 0) out.emplace_back(static_cast<int32_t>(t), dense[t]);
    return out;
  }
  if (!rows_.defined()) return {{ids_.data<int32_t>()[row], 1.0}};  // greedy: the argmax
  // The candidates in id order, as the whole row would have them: the distribution over them is
  // the whole row's (every other token has no mass under top-k).
  std::vector<std::pair<int32_t, float>> c(static_cast<size_t>(k_));
  for (int64_t i = 0; i < k_; ++i)
    c[static_cast<size_t>(i)] = {ids_.data<int32_t>()[row * k_ + i], rows_.data<float>()[row * k_ + i]};
  std::sort(c.begin(), c.end());
  std::vector<float> z(c.size());
  for (size_t i = 0; i < c.size(); ++i) z[i] = c[i].second;
  const std::vector<double> p = sampling_distribution(z, sampling_, {});
  for (size_t i = 0; i < c.size(); ++i)
    if (p[i] > 0) out.emplace_back(c[i].first, p[i]);
  return out;
}

int32_t TokenChoices::draw(int64_t row, std::span<const int32_t> seen, double u) const {
  return draw_token(distribution(row, seen), u);
}

std::pair<double, int64_t> perplexity(Transformer& model, const std::vector<int32_t>& tokens, int64_t seq_len,
                                      int64_t batch) {
  const auto windows = (static_cast<int64_t>(tokens.size()) - 1) / seq_len;
  STRATA_CHECK(windows >= 1, "perplexity: ", tokens.size(), " tokens do not fill one window of ", seq_len + 1);
  double nll = 0;
  int64_t scored = 0;
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int64_t b = std::min(batch, windows - w0);
    std::vector<int32_t> ids(static_cast<size_t>(b * seq_len)), targets(ids.size());
    for (int64_t i = 0; i < b; ++i)
      for (int64_t t = 0; t < seq_len; ++t) {
        const auto at = static_cast<size_t>((w0 + i) * seq_len + t);
        ids[static_cast<size_t>(i * seq_len + t)] = tokens[at];
        targets[static_cast<size_t>(i * seq_len + t)] = tokens[at + 1];
      }
    const double loss = model.forward(Tensor::from_vector(ids, {b, seq_len}), Tensor::from_vector(targets, {b, seq_len}),
                                      Recompute::full);
    nll += loss * static_cast<double>(b * seq_len);
    scored += b * seq_len;
  }
  return {std::exp(nll / static_cast<double>(scored)), scored};
}

void load_weights(Transformer& model, const std::string& checkpoint) {
  std::vector<CheckpointEntry> entries;
  for (auto& p : model.params().all()) entries.push_back({p->name, p->global_shape, p->global_offset(), &p->value, true});
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
    const TokenChoices choices(logits, options.sampling);
    std::vector<size_t> next_active;
    ids.clear();
    segments.clear();
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t b = active[j];
      const int32_t token = choices.draw(static_cast<int64_t>(j), seen[b],
                                         sampling_uniform(options.sampling.seed, b, static_cast<uint64_t>(step)));
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

namespace {

// Feeds seq[fed, end) to `model` (one segment); returns its logits [rows, vocab] for the last
// `rows` fed positions, on the model's device.
Tensor feed(const Transformer& model, KvCache& cache, const std::vector<int32_t>& seq, int64_t fed, int64_t rows) {
  const auto n = static_cast<int64_t>(seq.size()) - fed;
  std::vector<int32_t> ids(seq.begin() + fed, seq.end());
  const std::vector<CacheSegment> segment = {{0, n, fed}};
  const Tensor logits = model.forward_cached(Tensor::from_vector(ids, {n}), segment, cache, /*last_only=*/rows == 1);
  return logits.slice(0, logits.size(0) - rows, logits.size(0));
}

}  // namespace

Conversation::Conversation(const Transformer& model)
    : model_(model), cache_(model.make_kv_cache(1, model.config().max_seq_len)) {}

std::vector<int32_t> Conversation::turn(const std::vector<int32_t>& tokens, const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token) {
  STRATA_CHECK(static_cast<int64_t>(seq_.size() + tokens.size()) < cache_.max_len, "the conversation has ",
               seq_.size(), " tokens; ", tokens.size(), " more leave no room in model.max_seq_len = ", cache_.max_len);
  seq_.insert(seq_.end(), tokens.begin(), tokens.end());
  std::vector<int32_t> reply;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const TokenChoices choices(feed(model_, cache_, seq_, fed_, 1), options.sampling);
    fed_ = static_cast<int64_t>(seq_.size());
    const int32_t token = choices.draw(0, seq_, sampling_uniform(options.sampling.seed, turns_, static_cast<uint64_t>(step)));
    seq_.push_back(token);
    reply.push_back(token);
    if (on_token) on_token(token);
    if (token == options.stop_token || static_cast<int64_t>(seq_.size()) >= cache_.max_len) break;
  }
  ++turns_;
  return reply;
}

std::vector<int32_t> generate_speculative(const Transformer& target, const Transformer& draft,
                                          const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                          int64_t draft_tokens, SpeculativeStats* stats,
                                          const std::function<void(int32_t)>& on_token) {
  STRATA_CHECK(draft_tokens >= 1, "--draft-tokens must be at least 1, got ", draft_tokens);
  STRATA_CHECK(target.config().vocab_size == draft.config().vocab_size, "speculative decoding: the draft's "
               "vocabulary (", draft.config().vocab_size, ") differs from the target's (", target.config().vocab_size, ")");
  STRATA_CHECK(!prompt.empty(), "generate: an empty prompt (give at least one token)");
  const int64_t limit = std::min(target.config().max_seq_len, draft.config().max_seq_len);
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  STRATA_CHECK(prompt_len < limit, "generate: a prompt of ", prompt_len, " tokens leaves no room in max_seq_len ", limit);
  const int64_t max_len = std::min(limit, prompt_len + options.max_new_tokens);
  KvCache target_cache = target.make_kv_cache(1, max_len), draft_cache = draft.make_kv_cache(1, max_len);
  const SamplingConfig& sc = options.sampling;
  std::vector<int32_t> seq = prompt, out;
  int64_t target_fed = 0, draft_fed = 0;
  uint64_t draw = 0;  // the counter of every uniform this generation uses
  auto uniform = [&] { return sampling_uniform(sc.seed, 0x5bec0000u, draw++); };
  // Each round: the draft proposes, the target verifies. The newest token is never fed yet (its
  // successor's logits come from feeding it), so each model first catches up to seq minus one.
  while (static_cast<int64_t>(seq.size()) < max_len) {
    const int64_t room = max_len - static_cast<int64_t>(seq.size());
    const int64_t k = std::min(draft_tokens, room - 1 > 0 ? room - 1 : 0);
    // Every distribution comes from TokenChoices, so on a GPU a greedy round brings only the
    // chosen ids to the host (one per draft step, k + 1 from the target), and top-k sampling the
    // k best logits of each of those rows.
    std::vector<int32_t> proposal;
    std::vector<SparseDistribution> q;
    {
      std::vector<int32_t> draft_seq = seq;
      Tensor logits = feed(draft, draft_cache, draft_seq, draft_fed, 1);
      draft_fed = static_cast<int64_t>(draft_seq.size());
      for (int64_t i = 0; i < k; ++i) {
        q.push_back(TokenChoices(logits, sc).distribution(0, draft_seq));
        const int32_t d = draw_token(q.back(), uniform());
        proposal.push_back(d);
        draft_seq.push_back(d);
        if (i + 1 < k) {
          logits = feed(draft, draft_cache, draft_seq, draft_fed, 1);
          draft_fed = static_cast<int64_t>(draft_seq.size());
        }
      }
    }
    // The target scores the last real token and every proposal in one forward.
    std::vector<int32_t> verify = seq;
    verify.insert(verify.end(), proposal.begin(), proposal.end());
    const TokenChoices p_rows(feed(target, target_cache, verify, target_fed, k + 1), sc);
    if (stats) {
      ++stats->target_forwards;
      stats->proposed += k;
    }
    std::vector<int32_t> accepted;
    int32_t next = -1;
    std::vector<int32_t> context = seq;
    for (int64_t i = 0; i < k; ++i) {
      const SparseDistribution p = p_rows.distribution(i, context);
      const SparseDistribution& qi = q[static_cast<size_t>(i)];
      const int32_t d = proposal[static_cast<size_t>(i)];
      const double q_d = probability_of(qi, d);
      const double ratio = q_d > 0 ? probability_of(p, d) / q_d : 0.0;
      if (uniform() < std::min(1.0, ratio)) {
        accepted.push_back(d);
        context.push_back(d);
        if (stats) ++stats->accepted;
        continue;
      }
      // Rejected: draw from the part of p that q does not cover, max(0, p - q) (zero wherever p
      // is), summed in id order.
      SparseDistribution residual;
      double mass = 0;
      for (const auto& [t, pt] : p) {
        const double r = std::max(0.0, pt - probability_of(qi, t));
        mass += r;
        residual.emplace_back(t, r);
      }
      if (mass > 0)
        for (auto& entry : residual) entry.second /= mass;
      next = draw_token(mass > 0 ? residual : p, uniform());
      break;
    }
    if (next < 0)  // every proposal accepted: one more token from the target
      next = draw_token(p_rows.distribution(k, context), uniform());
    accepted.push_back(next);
    target_fed = static_cast<int64_t>(seq.size()) + static_cast<int64_t>(accepted.size()) - 1;
    draft_fed = std::min<int64_t>(draft_fed, target_fed);
    bool stop = false;
    for (int32_t t : accepted) {
      seq.push_back(t);
      out.push_back(t);
      if (on_token) on_token(t);
      if (t == options.stop_token || static_cast<int64_t>(out.size()) >= options.max_new_tokens ||
          static_cast<int64_t>(seq.size()) >= max_len) {
        stop = true;
        break;
      }
    }
    if (stop) break;
  }
  return out;
}

}  // namespace strata

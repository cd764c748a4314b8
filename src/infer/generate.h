// Inference: sampling, and generation with a KV cache. Prompts of different lengths are prefilled
// together in one forward (their tokens back to back, no padding), then every unfinished sequence
// advances one token per step, each step one forward over the batch.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/transformer.h"

namespace strata {

struct SamplingConfig {
  double temperature = 0.0;         // 0: greedy (the most likely token; ties to the lowest id)
  int64_t top_k = 0;                // keep the k most likely tokens (0: all)
  double top_p = 1.0;               // keep the smallest most-likely set whose mass reaches top_p
  double repetition_penalty = 1.0;  // divide positive (multiply negative) logits of seen tokens
  uint64_t seed = 0;
};

// The distribution a sampler draws from, over the whole vocabulary: the repetition penalty on
// the tokens in `seen`, the temperature, softmax, then top-k, then top-p, renormalised. Under
// greedy (temperature 0) all mass sits on the argmax (after the penalty).
std::vector<double> sampling_distribution(std::span<const float> logits, const SamplingConfig& config,
                                          std::span<const int32_t> seen);
// The token whose cumulative probability first exceeds u in [0, 1).
int32_t draw_token(const std::vector<double>& probs, double u);
// A uniform [0, 1) draw with 53 bits, the same for the same (seed, sequence, step) on every rank.
double sampling_uniform(uint64_t seed, uint64_t sequence, uint64_t step);

// Perplexity exp(mean cross-entropy) of `tokens` in windows of `seq_len` next-token predictions
// (seq_len + 1 tokens each, not overlapping; a shorter rest is dropped), `batch` windows a forward.
// Returns {perplexity, tokens scored}.
std::pair<double, int64_t> perplexity(Transformer& model, const std::vector<int32_t>& tokens, int64_t seq_len,
                                      int64_t batch = 4);

// Fills `model`'s parameters from a checkpoint of any layout.
void load_weights(Transformer& model, const std::string& checkpoint);

// The logits as f32 on the host (cast on their device, then copied).
Tensor host_f32(const Tensor& logits);

// A distribution over the vocabulary as the tokens that carry mass, in ascending id order, each
// with its probability. draw_token over it walks the same ids in the same order as over the dense
// vector, so it draws the same token for the same u.
using SparseDistribution = std::vector<std::pair<int32_t, double>>;
int32_t draw_token(const SparseDistribution& probs, double u);
// The probability of `token` under `probs` (0 where it has no mass).
double probability_of(const SparseDistribution& probs, int32_t token);

// The distributions of each row of a forward's logits [rows, vocab] under `sampling`: those of
// sampling_distribution over the whole row. On a GPU, greedy decoding brings only each row's
// argmax id to the host, and top-k sampling (without top-p or a repetition penalty) only the k
// largest logits and their ids; anything else reads the whole rows.
class TokenChoices {
 public:
  TokenChoices(const Tensor& logits, const SamplingConfig& sampling);
  // Row `row`'s distribution, with `seen` the tokens its penalty looks at.
  SparseDistribution distribution(int64_t row, std::span<const int32_t> seen) const;
  // Row `row`'s token for u uniform in [0, 1): draw_token over distribution(row, seen).
  int32_t draw(int64_t row, std::span<const int32_t> seen, double u) const;

 private:
  SamplingConfig sampling_;
  int64_t vocab_ = 0, k_ = 0;  // k_ > 0: only the top k_ of each row came to the host
  Tensor rows_, ids_;          // f32 [rows, vocab or k] (undefined under greedy with k_ = 1); i32 [rows, k]
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  int32_t stop_token = -1;  // end-of-text: a sequence stops after choosing it (-1: never)
  SamplingConfig sampling;
};

// Continues each prompt; on_token(sequence, token) is called as each token is chosen. Returns the
// new tokens of each sequence (the stop token included when chosen).
std::vector<std::vector<int32_t>> generate(const Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t, int32_t)>& on_token = {});

// A conversation kept in one KV cache: each turn appends the user's tokens and generates a reply
// after them, feeding only what the cache does not hold yet.
class Conversation {
 public:
  explicit Conversation(const Transformer& model);
  // Appends `tokens`, then generates until options' stop token or max_new_tokens or a full cache;
  // returns the reply (the stop token included when chosen; it stays in the conversation).
  std::vector<int32_t> turn(const std::vector<int32_t>& tokens, const GenerateOptions& options,
                            const std::function<void(int32_t)>& on_token = {});
  const std::vector<int32_t>& tokens() const { return seq_; }
  int64_t room() const { return cache_.max_len - static_cast<int64_t>(seq_.size()); }

 private:
  const Transformer& model_;
  KvCache cache_;
  std::vector<int32_t> seq_;
  int64_t fed_ = 0;
  uint64_t turns_ = 0;
};

// Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft model proposes
// `draft_tokens` tokens one at a time, the target scores them all in one forward, and each is
// accepted with probability min(1, p(x) / q(x)); at the first rejection a token is drawn from
// max(0, p - q) renormalised, and when all are accepted one more from the target. The tokens then
// follow the target's distribution exactly (greedy: exactly the target's greedy tokens). Both
// models must share the vocabulary. One prompt at a time.
struct SpeculativeStats {
  int64_t proposed = 0, accepted = 0, target_forwards = 0;
  double acceptance_rate() const { return proposed ? static_cast<double>(accepted) / static_cast<double>(proposed) : 0; }
};
std::vector<int32_t> generate_speculative(const Transformer& target, const Transformer& draft,
                                          const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                          int64_t draft_tokens, SpeculativeStats* stats = nullptr,
                                          const std::function<void(int32_t)>& on_token = {});

}  // namespace strata

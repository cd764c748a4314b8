// Parameter and FLOP counts of a model config: the single source for the trainer's MFU and for
// `strata estimate`.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace strata {

struct ModelCounts {
  int64_t params = 0;              // every parameter (tied embeddings counted once)
  int64_t embedding_params = 0;    // token (+ position) tables
  int64_t matmul_params = 0;       // weights that take part in a matmul per token (with the head)
  int64_t active_matmul_params = 0;  // the same with only top_k experts of each MoE layer

  // FLOPs to train on one token of a sequence of seq_len: 6 per active matmul weight (2 forward,
  // 4 backward), plus causal attention: per layer, QK^T and PV cost 2 * 2 * d_model multiply-adds
  // per (query, key) pair, over seq_len / 2 keys on average, times 3 for forward and backward:
  // 6 * n_layers * d_model * seq_len.
  double train_flops_per_token(int64_t seq_len) const;
  double forward_flops_per_token(int64_t seq_len) const { return train_flops_per_token(seq_len) / 3; }

  int64_t n_layers = 0, d_model = 0;
};

ModelCounts count_model(const ModelConfig& config);

}  // namespace strata

// The shape of the network: one struct covers GPT-2 and Llama, dense or mixture-of-experts.
// Defaults here are the single source of truth for the config parser and docs/config.md.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

struct MoeConfig {
  int64_t n_experts = 0;  // 0: dense FFNs
  int64_t top_k = 2;
  double capacity_factor = 1.25;
  double aux_loss_coef = 0.01;
  double z_loss_coef = 0.0;
  int64_t every = 1;  // an MoE FFN in every `every`-th layer
};

struct ModelConfig {
  std::string arch = "llama";  // gpt2 | llama: names the family; the keys below set the pieces
  int64_t vocab_size = 50257;
  int64_t n_layers = 12;
  int64_t d_model = 768;
  int64_t n_heads = 12;
  int64_t n_kv_heads = 4;
  int64_t d_ff = 2048;
  int64_t max_seq_len = 1024;
  std::string norm = "rmsnorm";         // layernorm | rmsnorm
  std::string activation = "swiglu";    // gelu | swiglu
  std::string position = "rope";        // learned | rope
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  double norm_eps = 1e-5;
  bool bias = false;  // biases in linears (GPT-2: true)
  MoeConfig moe;

  int64_t head_dim() const { return d_model / n_heads; }
};

}  // namespace strata

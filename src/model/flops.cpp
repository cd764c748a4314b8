#include "model/flops.h"

namespace strata {

double ModelCounts::train_flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(active_matmul_params) +
         6.0 * static_cast<double>(n_layers) * static_cast<double>(d_model) * static_cast<double>(seq_len);
}

ModelCounts count_model(const ModelConfig& c) {
  ModelCounts n;
  n.n_layers = c.n_layers;
  n.d_model = c.d_model;
  const int64_t d = c.d_model, kv = c.n_kv_heads * c.head_dim();
  const int64_t bias = c.bias ? 1 : 0;
  const int64_t norm = c.norm == "layernorm" ? 2 * d : d;

  const int64_t attn_weights = d * d + 2 * d * kv + d * d;
  const int64_t attn_bias = bias * (d + 2 * kv + d);
  const bool swiglu = c.activation == "swiglu";
  const int64_t ffn_weights = (swiglu ? 3 : 2) * d * c.d_ff;
  const int64_t ffn_bias = bias * ((swiglu ? 2 : 1) * c.d_ff + d);

  n.embedding_params = c.vocab_size * d + (c.position == "learned" ? c.max_seq_len * d : 0);
  const int64_t head = c.vocab_size * d;
  n.params = n.embedding_params + (c.tie_embeddings ? 0 : head) + norm;  // + final norm
  n.matmul_params = head;
  n.active_matmul_params = head;
  for (int64_t layer = 0; layer < c.n_layers; ++layer) {
    const bool moe = c.moe.n_experts > 0 && (layer % c.moe.every) == c.moe.every - 1;
    const int64_t experts = moe ? c.moe.n_experts : 1;
    const int64_t active = moe ? c.moe.top_k : 1;
    const int64_t router = moe ? d * c.moe.n_experts : 0;
    n.params += 2 * norm + attn_weights + attn_bias + experts * (ffn_weights + ffn_bias) + router;
    n.matmul_params += attn_weights + experts * ffn_weights + router;
    n.active_matmul_params += attn_weights + active * ffn_weights + router;
  }
  return n;
}

}  // namespace strata

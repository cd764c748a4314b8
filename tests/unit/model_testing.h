// Whole-model test fixtures: a tiny GPT-2 or Llama config, and token batches with ids and targets
// in [0, vocab) drawn from Philox.
#pragma once

#include <string>

#include "core/philox.h"
#include "core/tensor.h"
#include "model/config.h"

namespace strata::testing {

// GPT-2 (LayerNorm, GELU, learned positions, tied, biases) or Llama (RMSNorm, SwiGLU, RoPE, GQA
// with two query heads per kv head, untied) at d_model 8, 2 layers, vocabulary 11.
inline ModelConfig tiny(const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 11;
  c.n_layers = 2;
  c.d_model = 8;
  c.n_heads = 2;
  c.d_ff = 12;
  c.max_seq_len = 8;
  if (arch == "gpt2") {
    c.n_kv_heads = 2;
    c.norm = "layernorm";
    c.activation = "gelu";
    c.position = "learned";
    c.tie_embeddings = true;
    c.bias = true;
  } else {
    c.n_kv_heads = 1;  // GQA: two query heads share one kv head
    c.norm = "rmsnorm";
    c.activation = "swiglu";
    c.position = "rope";
    c.tie_embeddings = false;
  }
  return c;
}

// ids, targets: [batch, seq] i32 from Philox(seed, stream 1 / 2, element index).
inline void make_token_batch(int64_t vocab_size, int64_t batch, int64_t seq, uint64_t seed,
                             Tensor& ids, Tensor& targets) {
  ids = Tensor::empty({batch, seq}, DType::i32);
  targets = Tensor::empty({batch, seq}, DType::i32);
  for (int64_t i = 0; i < batch * seq; ++i) {
    auto draw = [&](uint64_t stream) {
      return static_cast<int32_t>(philox::words(seed, stream, static_cast<uint64_t>(i)).v[0] %
                                  static_cast<uint32_t>(vocab_size));
    };
    ids.data<int32_t>()[i] = draw(1);
    targets.data<int32_t>()[i] = draw(2);
  }
}

}  // namespace strata::testing

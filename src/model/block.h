// One pre-norm transformer block:  h = x + attn(norm1(x));  y = h + mlp(norm2(h)).
#pragma once

#include "model/attention.h"
#include "model/mlp.h"
#include "model/norm.h"

namespace strata {

// Activation recomputation (Korthikanti et al. 2022): none keeps every activation; selective
// drops the attention core's output and rebuilds it in backward; full keeps only the block's
// input and re-runs the whole block forward in backward.
enum class Recompute : uint8_t { none, selective, full };
Recompute parse_recompute(const std::string& name);

struct BlockSaved {
  Tensor x;  // the block input [rows, d_model]: always kept
  Tensor xn1, h, xn2;
  NormSaved norm1, norm2;
  AttentionSaved attn;
  MlpSaved mlp;
  bool complete = false;  // false: only x is kept (full recompute)
};

class Block {
 public:
  Block() = default;
  Block(ParameterRegistry& registry, int64_t index, const ModelConfig& config, DType dtype,
        const TensorParallel& tp = {});
  // x, y: [batch, seq, d_model].
  void forward(const Tensor& x, Tensor& y, BlockSaved& saved, Recompute recompute) const;
  // dx overwritten; releases what was saved.
  void backward(const Tensor& dy, BlockSaved& saved, Tensor& dx) const;

 private:
  void run_forward(const Tensor& x, Tensor& y, BlockSaved& saved, bool keep_core) const;

  Norm norm1_, norm2_;
  SelfAttention attn_;
  Mlp mlp_;
};

}  // namespace strata

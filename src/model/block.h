// One pre-norm transformer block:  h = x + attn(norm1(x));  y = h + mlp(norm2(h)).
// Under tensor parallelism the attention and MLP branches are tp regions: their inputs enter
// through f (identity, or an all-gather of the rows under sequence parallelism) and their partial
// outputs leave through g (an all-reduce, or a reduce-scatter of the rows); the norms and the
// residual adds work on every row, or under sequence parallelism on this rank's rows only.
// The add before norm2 is fused with it (Norm::forward_add), and in backward both norms add the
// residual stream's gradient in their own pass (Norm::backward_add); the fused ops give the same
// bits as add and norm apart. The block's last add (y = h + mlp) stays a plain add: the norm it
// feeds is the next block's norm1 (or the final norm), past the block's end, where a pipeline
// stage may end and the next block keeps y as its own saved input.
#pragma once

#include "model/attention.h"
#include "model/mlp.h"
#include "model/moe.h"
#include "model/norm.h"

namespace strata {

// Activation recomputation (Korthikanti et al. 2022): none keeps every activation; selective
// drops the attention core's output and rebuilds it in backward; full keeps only the block's
// input and re-runs the whole block forward in backward.
enum class Recompute : uint8_t { none, selective, full };
Recompute parse_recompute(const std::string& name);

struct BlockSaved {
  int64_t batch = 0, seq = 0;  // the full batch's shape (set by the caller)
  Tensor x;  // the block input [rows, d_model] (this rank's rows): always kept
  Tensor xn1, xn2;  // the tp regions' inputs, all rows [batch * seq, d_model]
  Tensor h;         // x + attention, [rows, d_model] (this rank's rows)
  NormSaved norm1, norm2;
  AttentionSaved attn;
  MlpSaved mlp;
  MoeSaved moe;  // when the block's FFN is a mixture of experts
  bool complete = false;  // false: only x is kept (full recompute)
};

class Block {
 public:
  Block() = default;
  Block(ParameterRegistry& registry, int64_t index, const ModelConfig& config, DType dtype,
        const TensorParallel& tp = {}, const SequenceParallel& sp = {},
        const ExpertParallel& ep = {});
  // x, y: [rows, d_model]: batch * seq rows, or this rank's batch * seq / tp under sequence
  // parallelism; saved.batch and saved.seq give the full shape.
  void forward(const Tensor& x, Tensor& y, BlockSaved& saved, Recompute recompute) const;
  // dx overwritten; releases what was saved. `loss_scale`: the backward's loss scale, which an MoE
  // FFN applies to its auxiliary losses' gradients.
  void backward(const Tensor& dy, BlockSaved& saved, Tensor& dx, double loss_scale = 1.0) const;
  // Inference with a KV cache (SelfAttention::forward_cached): x, y [rows, d_model], every row.
  void forward_cached(const Tensor& x, std::span<const SelfAttention::CachedSegment> segments, Tensor& y) const;
  const SelfAttention& attention() const { return attn_; }
  // Weight-only int8 for the attention and MLP linears; bytes before and after.
  std::pair<int64_t, int64_t> quantize_int8();
  bool is_moe() const { return moe_on_; }
  const MoeLayer& moe() const { return moe_; }

 private:
  void run_forward(const Tensor& x, Tensor& y, BlockSaved& saved, bool keep_core) const;

  TensorParallel tp_;
  Norm norm1_, norm2_;
  SelfAttention attn_;
  Mlp mlp_;
  bool moe_on_ = false;  // the FFN is moe_ instead of mlp_
  MoeLayer moe_;
};

}  // namespace strata

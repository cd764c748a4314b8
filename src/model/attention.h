// Causal self-attention: q, k, v projections (GQA: n_kv_heads <= n_heads), optional RoPE, the
// flash-form attention op, and the output projection. Under tensor parallelism the query heads
// split over tp: wq is column-parallel, wo row-parallel (its partial outputs summed over tp), and
// wk/wv are column-parallel when tp divides n_kv_heads; when n_kv_heads < tp (and divides it)
// every rank holds wk/wv whole and computes only the one kv head its query heads use.
#pragma once

#include <span>

#include "model/config.h"
#include "model/linear.h"
#include "parallel/ring_attention.h"
#include "parallel/tensor_parallel.h"

namespace strata {

// What backward needs; `out`/`lse` are dropped under selective recompute and rebuilt from q, k, v.
struct AttentionSaved {
  Tensor q, k, v;  // [batch, seq, heads, head_dim], after RoPE
  Tensor out;      // [batch, seq, n_heads, head_dim]
  Tensor lse;      // [batch, n_heads, seq]
};

class SelfAttention {
 public:
  SelfAttention() = default;
  // Under sequence parallelism (sp.size > 1) the rows are this rank's two zigzag chunks of each
  // sequence (parallel/ring_attention.h): RoPE uses their global positions and the attention core
  // is ring attention over the sp group.
  SelfAttention(ParameterRegistry& registry, const std::string& name, const ModelConfig& config,
                DType dtype, const TensorParallel& tp = {}, const SequenceParallel& sp = {});

  // x: [batch, seq, d_model] (the normed input) -> y: [batch, seq, d_model], this rank's partial
  // sum (the block combines the tp ranks').
  // keep_core: save out/lse (false under selective recompute).
  void forward(const Tensor& x, Tensor& y, AttentionSaved& saved, bool keep_core) const;
  // dx overwritten: this rank's part of the input gradient.
  void backward(const Tensor& dy, const Tensor& x, AttentionSaved& saved, Tensor& dx) const;

  // Inference with a KV cache. x: [rows, d_model], the new tokens of several sequences back to
  // back; segment i is rows [row0, row0 + n) of a sequence whose first new token sits at position
  // `start`: its keys and values go into cache rows [start, start + n) of `k`, `v` ([max_len,
  // local kv heads, head_dim]) and its queries attend to cache rows [0, start + n). y: [rows,
  // d_model], this rank's partial sum under tensor parallelism.
  struct CachedSegment {
    int64_t row0 = 0, n = 0, start = 0;
    Tensor k, v;
  };
  void forward_cached(const Tensor& x, std::span<const CachedSegment> segments, Tensor& y) const;
  int64_t local_kv_heads() const { return n_kv_heads_; }
  // Weight-only int8 for the four projections (Linear::quantize_int8); bytes before and after.
  std::pair<int64_t, int64_t> quantize_int8();
  int64_t head_dim() const { return head_dim_; }

 private:
  void core_forward(AttentionSaved& saved) const;
  // RoPE (or its backward) in place at the rows' global positions.
  void rotate(Tensor& x, bool backward) const;

  Linear wq_, wk_, wv_, wo_;
  int64_t n_heads_ = 0, n_kv_heads_ = 0, head_dim_ = 0;  // local (per tp rank) head counts
  bool rope_ = true;
  double rope_theta_ = 10000.0;
  SequenceParallel sp_;
};

// Refuses a layout the attention cannot split, naming the keys (before any work is done).
void check_attention_layout(const ModelConfig& config, int64_t tp);

}  // namespace strata

#include "model/attention.h"

#include <cmath>

#include "kernels/ops.h"

namespace strata {

SelfAttention::SelfAttention(ParameterRegistry& registry, const std::string& name,
                             const ModelConfig& config, DType dtype, const TensorParallel& tp,
                             const SequenceParallel& sp)
    : rope_(config.position == "rope"), rope_theta_(config.rope_theta), sp_(sp) {
  const int64_t tp_rank = tp.rank, tp_size = tp.size;
  check_attention_layout(config, tp_size);
  head_dim_ = config.head_dim();
  n_heads_ = config.n_heads / tp_size;
  const bool split_kv = config.n_kv_heads % tp_size == 0;
  n_kv_heads_ = split_kv ? config.n_kv_heads / tp_size : 1;
  const int64_t d = config.d_model, kv = config.n_kv_heads * head_dim_;
  // GPT-2's scaled initialisation: residual projections get std 0.02 / sqrt(2 n_layers), so the
  // residual stream's variance does not grow with depth.
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.n_layers));
  auto spec = [&](const char* part, int64_t in, int64_t out, Split split, double std) {
    return LinearSpec{name + "." + part, in, out, config.bias, std, split, tp_rank, tp_size};
  };
  wq_ = Linear(registry, spec("wq", d, d, Split::column, 0.02), dtype);
  if (split_kv) {
    wk_ = Linear(registry, spec("wk", d, kv, Split::column, 0.02), dtype);
    wv_ = Linear(registry, spec("wv", d, kv, Split::column, 0.02), dtype);
  } else {
    // n_kv_heads < tp: this rank's query heads all use kv head (rank x n_kv_heads / tp).
    const int64_t kv_head = tp_rank * config.n_kv_heads / tp_size;
    for (auto [part, linear] : {std::pair{"wk", &wk_}, std::pair{"wv", &wv_}}) {
      LinearSpec s = spec(part, d, kv, Split::none, 0.02);
      s.window_start = kv_head * head_dim_;
      s.window_size = head_dim_;
      *linear = Linear(registry, s, dtype);
    }
  }
  wo_ = Linear(registry, spec("wo", d, d, Split::row, residual_std), dtype);
}

void SelfAttention::core_forward(AttentionSaved& s) const {
  const int64_t batch = s.q.size(0), seq = s.q.size(1);
  const DType stats = ops::stats_dtype(s.q.dtype());
  s.out = Tensor::empty({batch, seq, n_heads_, head_dim_}, s.q.dtype(), allocator_of(s.q));
  s.lse = Tensor::empty({batch, n_heads_, seq}, stats, allocator_of(s.q));
  if (sp_.active())
    ring_attention_forward(*sp_.group, s.q, s.k, s.v, 0.0, s.out, s.lse, sp_.stats);
  else
    ops::attention_forward(s.q, s.k, s.v, {}, s.out, s.lse);
}

void SelfAttention::rotate(Tensor& x, bool backward) const {
  auto apply = [&](Tensor& t, int64_t offset) {
    if (backward)
      ops::rope_backward(t, offset, rope_theta_, t);
    else
      ops::rope_forward(t, offset, rope_theta_, t);
  };
  if (!sp_.active()) return apply(x, 0);
  // Two chunks of c rows at their global positions.
  std::array<Tensor, 2> chunks = zigzag_split_chunks(x);
  const std::array<int64_t, 2> offsets = zigzag_offsets(sp_.rank, sp_.size, chunks[0].size(1));
  for (size_t h = 0; h < 2; ++h) apply(chunks[h], offsets[h]);
  zigzag_join_chunks(chunks, x);
}

void SelfAttention::forward(const Tensor& x, Tensor& y, AttentionSaved& s, bool keep_core) const {
  const int64_t batch = x.size(0), seq = x.size(1), rows = batch * seq;
  const DType dt = x.dtype();
  Tensor x2 = x.view({rows, -1});
  Allocator& alloc = allocator_of(x);
  s.q = Tensor::empty({batch, seq, n_heads_, head_dim_}, dt, alloc);
  s.k = Tensor::empty({batch, seq, n_kv_heads_, head_dim_}, dt, alloc);
  s.v = Tensor::empty({batch, seq, n_kv_heads_, head_dim_}, dt, alloc);
  Tensor q2 = s.q.view({rows, -1}), k2 = s.k.view({rows, -1}), v2 = s.v.view({rows, -1});
  wq_.forward(x2, q2);
  wk_.forward(x2, k2);
  wv_.forward(x2, v2);
  if (rope_) {
    rotate(s.q, false);
    rotate(s.k, false);
  }
  core_forward(s);
  Tensor y2 = y.view({rows, -1});
  wo_.forward(s.out.view({rows, -1}), y2);
  if (!keep_core) {
    s.out = Tensor();
    s.lse = Tensor();
  }
}

void SelfAttention::forward_cached(const Tensor& x, std::span<const CachedSegment> segments, Tensor& y) const {
  const int64_t rows = x.size(0);
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);
  Tensor q = Tensor::empty({rows, n_heads_, head_dim_}, dt, alloc);
  Tensor k = Tensor::empty({rows, n_kv_heads_, head_dim_}, dt, alloc);
  Tensor v = Tensor::empty({rows, n_kv_heads_, head_dim_}, dt, alloc);
  Tensor q2 = q.view({rows, -1}), k2 = k.view({rows, -1}), v2 = v.view({rows, -1});
  wq_.forward(x, q2);
  wk_.forward(x, k2);
  wv_.forward(x, v2);
  Tensor out = Tensor::empty({rows, n_heads_, head_dim_}, dt, alloc);
  for (const CachedSegment& seg : segments) {
    Tensor qs = q.slice(0, seg.row0, seg.row0 + seg.n).view({1, seg.n, n_heads_, head_dim_});
    Tensor ks = k.slice(0, seg.row0, seg.row0 + seg.n).view({1, seg.n, n_kv_heads_, head_dim_});
    if (rope_) {
      ops::rope_forward(qs, seg.start, rope_theta_, qs);
      ops::rope_forward(ks, seg.start, rope_theta_, ks);
    }
    Tensor k_dst = seg.k.slice(0, seg.start, seg.start + seg.n);
    Tensor v_dst = seg.v.slice(0, seg.start, seg.start + seg.n);
    k_dst.copy_from(ks.view(k_dst.shape()));
    v_dst.copy_from(v.slice(0, seg.row0, seg.row0 + seg.n));
    const int64_t len = seg.start + seg.n;
    Tensor os = out.slice(0, seg.row0, seg.row0 + seg.n).view({1, seg.n, n_heads_, head_dim_});
    // The new rows against the cache so far; the backend chooses how to split the cache (on CUDA,
    // enough chunks to fill the GPU for one or a few rows, merged by their log-sum-exp).
    auto cached = [&](const Tensor& t) { return t.slice(0, 0, len).view({1, len, n_kv_heads_, head_dim_}); };
    ops::attention_decode(qs, cached(seg.k), cached(seg.v), seg.start, os);
  }
  wo_.forward(out.view({rows, -1}), y);
}

std::pair<int64_t, int64_t> SelfAttention::quantize_int8() {
  std::pair<int64_t, int64_t> total{0, 0};
  for (Linear* l : {&wq_, &wk_, &wv_, &wo_}) {
    const auto [before, after] = l->quantize_int8();
    total.first += before;
    total.second += after;
  }
  return total;
}

void SelfAttention::backward(const Tensor& dy, const Tensor& x, AttentionSaved& s, Tensor& dx) const {
  const int64_t batch = x.size(0), seq = x.size(1), rows = batch * seq;
  const DType dt = x.dtype();
  if (!s.out.defined()) core_forward(s);  // selective recompute: rebuild out and lse
  Allocator& alloc = allocator_of(x);
  Tensor dout = Tensor::empty(s.out.shape(), dt, alloc);
  Tensor dout2 = dout.view({rows, -1});
  wo_.backward(s.out.view({rows, -1}), dy.view({rows, -1}), dout2);
  Tensor dq = Tensor::empty(s.q.shape(), dt, alloc), dk = Tensor::empty(s.k.shape(), dt, alloc),
         dv = Tensor::empty(s.v.shape(), dt, alloc);
  if (sp_.active())
    ring_attention_backward(*sp_.group, dout, s.q, s.k, s.v, s.out, s.lse, 0.0, dq, dk, dv,
                            sp_.stats);
  else
    ops::attention_backward(dout, s.q, s.k, s.v, s.out, s.lse, {}, dq, dk, dv);
  if (rope_) {
    rotate(dq, true);
    rotate(dk, true);
  }
  Tensor x2 = x.view({rows, -1}), dx2 = dx.view({rows, -1});
  wq_.backward(x2, dq.view({rows, -1}), dx2);
  wk_.backward(x2, dk.view({rows, -1}), dx2, /*accumulate_dx=*/true);
  wv_.backward(x2, dv.view({rows, -1}), dx2, /*accumulate_dx=*/true);
}

void check_attention_layout(const ModelConfig& config, int64_t tp) {
  STRATA_CHECK(config.n_heads % tp == 0, "parallel.tp = ", tp, " does not divide model.n_heads = ",
               config.n_heads, ": attention heads are split across tensor-parallel ranks");
  STRATA_CHECK(config.n_kv_heads % tp == 0 || tp % config.n_kv_heads == 0, "parallel.tp = ", tp,
               " and model.n_kv_heads = ", config.n_kv_heads,
               ": one must divide the other (kv heads are split when tp divides them, shared by "
               "groups of ranks when they divide tp)");
}

}  // namespace strata

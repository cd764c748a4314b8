#include "model/block.h"

#include "kernels/ops.h"

namespace strata {

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "selective") return Recompute::selective;
  if (name == "full") return Recompute::full;
  STRATA_FAIL("unknown recompute mode '", name, "' (valid: none, selective, full)");
}

Block::Block(ParameterRegistry& registry, int64_t index, const ModelConfig& config, DType dtype,
             const TensorParallel& tp, const SequenceParallel& sp, const ExpertParallel& ep)
    : tp_(tp) {
  const std::string name = "layers." + std::to_string(index);
  const NormKind kind = config.norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm;
  norm1_ = Norm(registry, name + ".attn_norm", kind, config.d_model, config.norm_eps, dtype,
                tp.splits_rows());
  attn_ = SelfAttention(registry, name + ".attn", config, dtype, tp, sp);
  norm2_ = Norm(registry, name + ".mlp_norm", kind, config.d_model, config.norm_eps, dtype,
                tp.splits_rows());
  moe_on_ = is_moe_layer(config, index);
  if (moe_on_)
    moe_ = MoeLayer(registry, name + ".moe", config, dtype, tp, ep);
  else
    mlp_ = Mlp(registry, name + ".mlp", config, dtype, tp);
}

void Block::run_forward(const Tensor& x, Tensor& y, BlockSaved& s, bool keep_core) const {
  const int64_t rows = x.size(0), d = x.size(1), all_rows = s.batch * s.seq;
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);
  Tensor xn1 = Tensor::empty({rows, d}, dt, alloc);
  norm1_.forward(x, xn1, s.norm1);
  s.xn1 = tp_.to_full(xn1).view({s.batch, s.seq, d});  // f
  Tensor a = Tensor::empty({s.batch, s.seq, d}, dt, alloc);
  attn_.forward(s.xn1, a, s.attn, keep_core);
  Tensor a2 = a.view({all_rows, d});
  s.h = tp_.from_partial(a2);  // g
  Tensor xn2 = Tensor::empty({rows, d}, dt, alloc);
  norm2_.forward_add(s.h, x, s.h, xn2, s.norm2);  // h = x + attn(norm1(x)) in place, xn2 = norm2(h)
  s.xn2 = tp_.to_full(xn2);  // f
  Tensor m = Tensor::empty({all_rows, d}, dt, alloc);
  if (moe_on_)
    moe_.forward(s.xn2, m, s.moe);
  else
    mlp_.forward(s.xn2, m, s.mlp);
  Tensor m_rows = tp_.from_partial(m);  // g
  ops::add(m_rows, s.h, y);             // y = h + mlp(norm2(h))
  s.complete = true;
}

void Block::forward_cached(const Tensor& x, std::span<const SelfAttention::CachedSegment> segments,
                           Tensor& y) const {
  STRATA_CHECK(!tp_.splits_rows(), "inference does not run with tp sequence parallelism");
  const int64_t rows = x.size(0), d = x.size(1);
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);
  NormSaved saved1, saved2;
  Tensor xn1 = Tensor::empty({rows, d}, dt, alloc), a = Tensor::empty({rows, d}, dt, alloc);
  norm1_.forward(x, xn1, saved1);
  attn_.forward_cached(xn1, segments, a);
  tp_.reduce(a);
  Tensor h = Tensor::empty({rows, d}, dt, alloc), xn2 = Tensor::empty({rows, d}, dt, alloc),
         m = Tensor::empty({rows, d}, dt, alloc);
  norm2_.forward_add(a, x, h, xn2, saved2);
  if (moe_on_) {
    MoeSaved moe_saved;
    moe_.forward(xn2, m, moe_saved);
  } else {
    MlpSaved mlp_saved;
    mlp_.forward(xn2, m, mlp_saved);
  }
  tp_.reduce(m);
  ops::add(m, h, y);
}

std::pair<int64_t, int64_t> Block::quantize_int8() {
  STRATA_CHECK(!moe_on_, "int8 quantisation of mixture-of-experts layers is not supported");
  const auto a = attn_.quantize_int8();
  const auto m = mlp_.quantize_int8();
  return {a.first + m.first, a.second + m.second};
}

void Block::forward(const Tensor& x, Tensor& y, BlockSaved& s, Recompute recompute) const {
  s.x = x;
  run_forward(x, y, s, recompute == Recompute::none);
  if (recompute == Recompute::full) {
    BlockSaved kept;
    kept.batch = s.batch;
    kept.seq = s.seq;
    kept.x = s.x;
    kept.moe.counts = s.moe.counts;  // what the forward routed, for the metrics
    kept.moe.losses = s.moe.losses;
    s = kept;
  }
}

void Block::backward(const Tensor& dy, BlockSaved& s, Tensor& dx, double loss_scale) const {
  Allocator& alloc = allocator_of(s.x);
  if (!s.complete) {
    Tensor y = Tensor::empty(s.x.shape(), s.x.dtype(), alloc);
    run_forward(s.x, y, s, /*keep_core=*/true);
  }
  const int64_t rows = s.x.size(0), d = s.x.size(1), all_rows = s.batch * s.seq;
  const DType dt = s.x.dtype();
  // Through the MLP branch: dh = dy + norm2'(g'(mlp'(f'(dy)))), where f' and g' swap roles.
  Tensor dy_full = tp_.to_full(dy);
  Tensor dxn2 = Tensor::empty({all_rows, d}, dt, alloc);
  if (moe_on_)
    moe_.backward(dy_full, s.xn2, s.moe, loss_scale, dxn2);
  else
    mlp_.backward(dy_full, s.xn2, s.mlp, dxn2);
  Tensor dxn2_rows = tp_.from_partial(dxn2);
  Tensor dh = Tensor::empty({rows, d}, dt, alloc);
  norm2_.backward_add(dxn2_rows, dy, s.h, s.norm2, dh);
  // Through the attention branch: dx = dh + norm1'(attention'(dh)).
  Tensor dh_full = tp_.to_full(dh);
  Tensor dxn1 = Tensor::empty({s.batch, s.seq, d}, dt, alloc);
  attn_.backward(dh_full.view({s.batch, s.seq, d}), s.xn1, s.attn, dxn1);
  Tensor dxn1_2 = dxn1.view({all_rows, d});
  Tensor dxn1_rows = tp_.from_partial(dxn1_2);
  norm1_.backward_add(dxn1_rows, dh, s.x, s.norm1, dx);
  const int64_t batch = s.batch, seq = s.seq;
  s = BlockSaved{};
  s.batch = batch;
  s.seq = seq;
}

}  // namespace strata

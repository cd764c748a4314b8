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
             const TensorParallel& tp) {
  const std::string name = "layers." + std::to_string(index);
  const NormKind kind = config.norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm;
  norm1_ = Norm(registry, name + ".attn_norm", kind, config.d_model, config.norm_eps, dtype);
  attn_ = SelfAttention(registry, name + ".attn", config, dtype, tp);
  norm2_ = Norm(registry, name + ".mlp_norm", kind, config.d_model, config.norm_eps, dtype);
  mlp_ = Mlp(registry, name + ".mlp", config, dtype, tp);
}

void Block::run_forward(const Tensor& x, Tensor& y, BlockSaved& s, bool keep_core) const {
  const Shape shape = x.shape();
  const int64_t rows = x.size(0) * x.size(1);
  const DType dt = x.dtype();
  Tensor x2 = x.view({rows, -1});
  s.xn1 = Tensor::empty(shape, dt);
  Tensor xn1_2 = s.xn1.view({rows, -1});
  norm1_.forward(x2, xn1_2, s.norm1);
  s.h = Tensor::empty(shape, dt);
  attn_.forward(s.xn1, s.h, s.attn, keep_core);
  ops::add(s.h, x, s.h);  // h = x + attn(norm1(x))
  s.xn2 = Tensor::empty({rows, x.size(2)}, dt);
  norm2_.forward(s.h.view({rows, -1}), s.xn2, s.norm2);
  Tensor y2 = y.view({rows, -1});
  mlp_.forward(s.xn2, y2, s.mlp);
  ops::add(y, s.h, y);  // y = h + mlp(norm2(h))
  s.complete = true;
}

void Block::forward(const Tensor& x, Tensor& y, BlockSaved& s, Recompute recompute) const {
  s.x = x;
  run_forward(x, y, s, recompute == Recompute::none);
  if (recompute == Recompute::full) {
    Tensor kept = s.x;
    s = BlockSaved{};
    s.x = kept;
  }
}

void Block::backward(const Tensor& dy, BlockSaved& s, Tensor& dx) const {
  if (!s.complete) {
    Tensor y = Tensor::empty(s.x.shape(), s.x.dtype());
    run_forward(s.x, y, s, /*keep_core=*/true);
  }
  const int64_t rows = s.x.size(0) * s.x.size(1);
  const DType dt = s.x.dtype();
  Tensor dy2 = dy.view({rows, -1});
  // Through the MLP branch: dh = dy + norm2'(mlp'(dy)).
  Tensor dxn2 = Tensor::empty(s.xn2.shape(), dt);
  mlp_.backward(dy2, s.xn2, s.mlp, dxn2);
  Tensor dh = Tensor::empty({rows, s.x.size(2)}, dt);
  norm2_.backward(dxn2, s.h.view({rows, -1}), s.norm2, dh);
  ops::add(dh, dy2, dh);
  // Through the attention branch: dx = dh + norm1'(attn'(dh)).
  Tensor dxn1 = Tensor::empty(s.x.shape(), dt);
  attn_.backward(dh.view(s.x.shape()), s.xn1, s.attn, dxn1);
  Tensor dx2 = dx.view({rows, -1});
  norm1_.backward(dxn1.view({rows, -1}), s.x.view({rows, -1}), s.norm1, dx2);
  ops::add(dx2, dh, dx2);
  s = BlockSaved{};
}

}  // namespace strata

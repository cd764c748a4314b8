#include "model/norm.h"

#include "kernels/ops.h"

namespace strata {

Norm::Norm(ParameterRegistry& registry, const std::string& name, NormKind kind, int64_t dim,
           double eps, DType dtype, bool partial_grads)
    : kind_(kind), eps_(eps) {
  weight_ = &registry.add_replicated(name + ".weight", {dim}, Init::ones, 0.0, false, dtype);
  weight_->tp_partial_grad = partial_grads;
  if (kind == NormKind::layernorm) {
    bias_ = &registry.add_replicated(name + ".bias", {dim}, Init::zeros, 0.0, false, dtype);
    bias_->tp_partial_grad = partial_grads;
  }
}

void Norm::forward(const Tensor& x, Tensor& y, NormSaved& saved) const {
  const int64_t rows = x.size(0);
  const DType stats = ops::stats_dtype(x.dtype());
  if (!saved.rstd.defined() || saved.rstd.numel() != rows) saved.rstd = Tensor::empty({rows}, stats, allocator_of(x));
  if (kind_ == NormKind::layernorm) {
    if (!saved.mean.defined() || saved.mean.numel() != rows) saved.mean = Tensor::empty({rows}, stats, allocator_of(x));
    ops::layernorm_forward(x, weight_->value, bias_->value, eps_, y, saved.mean, saved.rstd);
  } else {
    ops::rmsnorm_forward(x, weight_->value, eps_, y, saved.rstd);
  }
}

void Norm::backward(const Tensor& dy, const Tensor& x, const NormSaved& saved, Tensor& dx) const {
  if (kind_ == NormKind::layernorm) {
    ops::layernorm_backward(dy, x, weight_->value, saved.mean, saved.rstd, dx, weight_->grad,
                            bias_->grad);
  } else {
    ops::rmsnorm_backward(dy, x, weight_->value, saved.rstd, dx, weight_->grad);
  }
}

}  // namespace strata

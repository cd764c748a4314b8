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

void Norm::prepare_saved(const Tensor& x, NormSaved& saved) const {
  const int64_t rows = x.size(0);
  const DType stats = ops::stats_dtype(x.dtype());
  if (!saved.rstd.defined() || saved.rstd.numel() != rows) saved.rstd = Tensor::empty({rows}, stats, allocator_of(x));
  if (kind_ == NormKind::layernorm && (!saved.mean.defined() || saved.mean.numel() != rows))
    saved.mean = Tensor::empty({rows}, stats, allocator_of(x));
}

void Norm::forward(const Tensor& x, Tensor& y, NormSaved& saved) const {
  prepare_saved(x, saved);
  if (kind_ == NormKind::layernorm)
    ops::layernorm_forward(x, weight_->value, bias_->value, eps_, y, saved.mean, saved.rstd);
  else
    ops::rmsnorm_forward(x, weight_->value, eps_, y, saved.rstd);
}

void Norm::forward_add(const Tensor& x, const Tensor& residual_in, Tensor& residual_out, Tensor& y,
                       NormSaved& saved) const {
  prepare_saved(x, saved);
  if (kind_ == NormKind::layernorm)
    ops::add_layernorm_forward(x, residual_in, weight_->value, bias_->value, eps_, residual_out, y,
                               saved.mean, saved.rstd);
  else
    ops::add_rmsnorm_forward(x, residual_in, weight_->value, eps_, residual_out, y, saved.rstd);
}

void Norm::backward(const Tensor& dy, const Tensor& x, const NormSaved& saved, Tensor& dx) const {
  if (kind_ == NormKind::layernorm) {
    ops::layernorm_backward(dy, x, weight_->value, saved.mean, saved.rstd, dx, weight_->grad,
                            bias_->grad);
  } else {
    ops::rmsnorm_backward(dy, x, weight_->value, saved.rstd, dx, weight_->grad);
  }
}

void Norm::backward_add(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                        const NormSaved& saved, Tensor& dx) const {
  if (kind_ == NormKind::layernorm) {
    ops::add_layernorm_backward(dy, dresidual, x, weight_->value, saved.mean, saved.rstd, dx,
                                weight_->grad, bias_->grad);
  } else {
    ops::add_rmsnorm_backward(dy, dresidual, x, weight_->value, saved.rstd, dx, weight_->grad);
  }
}

}  // namespace strata

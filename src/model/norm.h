// LayerNorm (GPT-2: weight and bias) or RMSNorm (Llama: weight only) over the last dim.
#pragma once

#include <string>

#include "core/tensor.h"
#include "model/parameter.h"

namespace strata {

enum class NormKind : uint8_t { layernorm, rmsnorm };

// What a norm's backward needs besides its input.
struct NormSaved {
  Tensor mean;  // [rows] (layernorm only)
  Tensor rstd;  // [rows]
};

class Norm {
 public:
  Norm() = default;
  // Parameters <name>.weight (ones) and, for layernorm, <name>.bias (zeros); no weight decay.
  // partial_grads: each tp rank sees only its rows (sequence parallelism), so the parameters'
  // gradients are summed over tp after backward.
  Norm(ParameterRegistry& registry, const std::string& name, NormKind kind, int64_t dim, double eps,
       DType dtype, bool partial_grads = false);
  // x, y: [rows, dim].
  void forward(const Tensor& x, Tensor& y, NormSaved& saved) const;
  // dx overwritten; parameter gradients accumulated.
  void backward(const Tensor& dy, const Tensor& x, const NormSaved& saved, Tensor& dx) const;
  // The residual add fused with the norm (ops::add_*norm_forward): residual_out = x + residual_in,
  // y = norm(residual_out), the same bits as ops::add then forward. residual_out may alias x or
  // residual_in; its backward's x is residual_out.
  void forward_add(const Tensor& x, const Tensor& residual_in, Tensor& residual_out, Tensor& y,
                   NormSaved& saved) const;
  // dx = dresidual + the norm's dx (ops::add_*norm_backward), the same bits as backward then
  // ops::add: where the residual stream's gradient from later meets this norm's. dx may alias
  // dresidual.
  void backward_add(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                    const NormSaved& saved, Tensor& dx) const;

 private:
  // saved's statistics for x's rows (mean for layernorm only), reused when already that size.
  void prepare_saved(const Tensor& x, NormSaved& saved) const;

  NormKind kind_ = NormKind::rmsnorm;
  double eps_ = 1e-5;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
};

}  // namespace strata

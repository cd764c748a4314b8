#include "model/mlp.h"

#include <cmath>

#include "kernels/ops.h"

namespace strata {

Mlp::Mlp(ParameterRegistry& registry, const std::string& name, const ModelConfig& config,
         DType dtype, const TensorParallel& tp)
    : swiglu_(config.activation == "swiglu") {
  const int64_t tp_rank = tp.rank, tp_size = tp.size;
  STRATA_CHECK(config.d_ff % tp_size == 0, name, ": d_ff=", config.d_ff, " does not split over tp=",
               tp_size);
  local_ff_ = config.d_ff / tp_size;
  const int64_t d = config.d_model, ff = config.d_ff;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.n_layers));
  auto spec = [&](const char* part, int64_t in, int64_t out, Split split, double std) {
    return LinearSpec{name + "." + part, in, out, config.bias, std, split, tp_rank, tp_size};
  };
  if (swiglu_) {
    gate_ = Linear(registry, spec("gate", d, ff, Split::column, 0.02), dtype);
    in_ = Linear(registry, spec("up", d, ff, Split::column, 0.02), dtype);
    out_ = Linear(registry, spec("down", ff, d, Split::row, residual_std), dtype);
  } else {
    in_ = Linear(registry, spec("fc", d, ff, Split::column, 0.02), dtype);
    out_ = Linear(registry, spec("proj", ff, d, Split::row, residual_std), dtype);
  }
}

void Mlp::forward(const Tensor& x, Tensor& y, MlpSaved& s) const {
  const int64_t rows = x.size(0);
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);
  s.h = Tensor::empty({rows, local_ff_}, dt, alloc);
  s.act = Tensor::empty({rows, local_ff_}, dt, alloc);
  if (swiglu_) {
    s.up = Tensor::empty({rows, local_ff_}, dt, alloc);
    gate_.forward(x, s.h);
    in_.forward(x, s.up);
    ops::swiglu_forward(s.h, s.up, s.act);
  } else {
    in_.forward(x, s.h);
    ops::gelu_forward(s.h, s.act);
  }
  out_.forward(s.act, y);
}

void Mlp::backward(const Tensor& dy, const Tensor& x, const MlpSaved& s, Tensor& dx) const {
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);
  Tensor dact = Tensor::empty(s.act.shape(), dt, alloc);
  out_.backward(s.act, dy, dact);
  if (swiglu_) {
    Tensor dgate = Tensor::empty(s.h.shape(), dt, alloc), dup = Tensor::empty(s.up.shape(), dt, alloc);
    ops::swiglu_backward(dact, s.h, s.up, dgate, dup);
    gate_.backward(x, dgate, dx);
    in_.backward(x, dup, dx, /*accumulate_dx=*/true);
  } else {
    Tensor dh = Tensor::empty(s.h.shape(), dt, alloc);
    ops::gelu_backward(dact, s.h, dh);
    in_.backward(x, dh, dx);
  }
}

}  // namespace strata

namespace strata {

std::pair<int64_t, int64_t> Mlp::quantize_int8() {
  std::pair<int64_t, int64_t> total{0, 0};
  for (Linear* l : {&gate_, &in_, &out_}) {
    if (l->local_in() == 0) continue;  // GELU MLPs have no gate
    const auto [before, after] = l->quantize_int8();
    total.first += before;
    total.second += after;
  }
  return total;
}

}  // namespace strata

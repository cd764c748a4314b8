#include "optim/adamw.h"

#include <cmath>

#include "kernels/ops.h"

namespace strata {

AdamW::AdamW(ParameterRegistry& params, const AdamWHyper& hyper) : hyper_(hyper) {
  for (auto& p : params.all()) {
    Slot s{p.get(), Tensor(), Tensor(), Tensor()};
    const DType value = p->value.dtype();
    const DType master = value == DType::f64 ? DType::f64 : DType::f32;
    if (value != master) {
      s.master = Tensor::empty(p->value.shape(), master);
      ops::cast(p->value, s.master);
    }
    s.m = Tensor::zeros(p->value.shape(), master);
    s.v = Tensor::zeros(p->value.shape(), master);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  for (Slot& s : slots_) {
    ops::AdamWArgs args;
    args.lr = lr;
    args.beta1 = hyper_.beta1;
    args.beta2 = hyper_.beta2;
    args.eps = hyper_.eps;
    args.weight_decay = s.param->weight_decay ? hyper_.weight_decay : 0.0;
    args.step = step_;
    args.grad_scale = grad_scale;
    if (s.master.defined()) {
      ops::adamw(s.master, s.param->accum(), s.m, s.v, args);
      ops::cast(s.master, s.param->value);
    } else {
      ops::adamw(s.param->value, s.param->accum(), s.m, s.v, args);
    }
  }
}

std::vector<AdamW::NamedState> AdamW::state() {
  std::vector<NamedState> out;
  for (Slot& s : slots_) {
    if (s.master.defined()) out.push_back({s.param->name + "/master", s.param, &s.master});
    out.push_back({s.param->name + "/exp_avg", s.param, &s.m});
    out.push_back({s.param->name + "/exp_avg_sq", s.param, &s.v});
  }
  return out;
}

double grad_norm(ParameterRegistry& params) {
  double sum = 0;
  for (auto& p : params.all()) sum += ops::sum_squares(p->accum());
  return std::sqrt(sum);
}

}  // namespace strata

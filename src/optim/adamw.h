// AdamW over a parameter registry, with master weights. When parameters are held in bf16/f16, the
// optimizer keeps an f32 master copy and f32 moments, updates the master, and rounds it back into
// the parameter; f32/f64 parameters are their own master.
#pragma once

#include <string>
#include <vector>

#include "model/parameter.h"

namespace strata {

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to parameters whose weight_decay flag is set
};

class AdamW {
 public:
  AdamW(ParameterRegistry& params, const AdamWHyper& hyper);

  // One update with learning rate `lr`; every gradient is first multiplied by `grad_scale`
  // (1 / loss scale, times the clipping factor). Weight decay only where the parameter asks.
  void step(double lr, double grad_scale);
  int64_t steps_taken() const { return step_; }

  // Optimizer state by name, for checkpoints: "<param>/master" (when kept), "<param>/exp_avg",
  // "<param>/exp_avg_sq". Each is the local slice of the parameter's global shape.
  struct NamedState {
    std::string name;
    const Parameter* param;
    Tensor* tensor;
  };
  std::vector<NamedState> state();
  void set_steps_taken(int64_t steps) { step_ = steps; }

 private:
  struct Slot {
    Parameter* param;
    Tensor master;  // undefined when the parameter is its own master
    Tensor m, v;
  };
  AdamWHyper hyper_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// sqrt(sum over parameters of sum(grad^2)), accumulated in f64.
double grad_norm(ParameterRegistry& params);

}  // namespace strata

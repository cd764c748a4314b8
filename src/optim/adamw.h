// AdamW over a parameter registry, with master weights. When parameters are held in bf16/f16, the
// optimizer keeps an f32 master copy and f32 moments, updates the master, and rounds it back into
// the parameter; f32/f64 parameters are their own master.
//
// Under ZeRO (parallel/zero.h) a rank keeps the state of its rows of every parameter only and
// updates those rows; at stages 1 and 2 one all-gather then gives every rank the whole updated
// parameters, at stage 3 the rows are all a rank keeps. With `offload` the state lives in host
// memory, every parameter has a master there (an f32 one too: the device copy is not updated in
// place), the step reads host copies of the gradients and writes the updated rows back.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "model/parameter.h"
#include "parallel/zero.h"

namespace strata {

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to parameters whose weight_decay flag is set
};

class AdamW {
 public:
  AdamW(ParameterRegistry& params, const AdamWHyper& hyper, const ZeroShard& zero = {},
        bool offload = false);

  // One update with learning rate `lr`; every gradient is first multiplied by `grad_scale`
  // (1 / loss scale, times the clipping factor). Weight decay only where the parameter asks.
  void step(double lr, double grad_scale);
  // The same update as step(lr, *grad_scale) for parameters and state on a GPU, in one
  // multi-tensor pass (ops::adamw_multi): grad_scale (one f32) and skip (one i32; nonzero: no
  // update) are on the device, so the host need not wait for them. The step count used is
  // steps_taken() + 1, and count_step() advances it once the caller knows the update was made.
  // Under ZeRO each rank updates its rows, then at stages 1 and 2 the all-gathers as in step() (a
  // skipped step gathers the unchanged rows). Not with the optimizer offloaded.
  void step_on_device(double lr, const Tensor& grad_scale, const Tensor& skip);
  void count_step() { ++step_; }
  int64_t steps_taken() const { return step_; }

  // Optimizer state by name, for checkpoints: "<param>/master" (when kept), "<param>/exp_avg",
  // "<param>/exp_avg_sq". Each is the local slice of the parameter's global shape, or under ZeRO
  // rows [row_offset, row_offset + rows) of that local slice.
  struct NamedState {
    std::string name;
    const Parameter* param;
    Tensor* tensor;
    int64_t row_offset = 0;
  };
  // Bytes of optimizer state (master weights and moments) this rank holds.
  int64_t state_bytes() const;
  // The state a checkpoint holds. A master that only copies an f32/f64 parameter (offload) is left
  // out: after loading, refresh_copied_masters() takes it from the parameter again.
  std::vector<NamedState> state();
  // Masters from their parameters again: the copied ones (after a resume), or all (after the
  // parameters were loaded without optimizer state).
  void refresh_masters(bool copied_only);
  void set_steps_taken(int64_t steps) { step_ = steps; }

 private:
  struct Slot {
    Parameter* param;
    Tensor master;  // undefined when the parameter is its own master
    Tensor m, v;
    bool copied_master = false;  // a master of the parameter's own dtype (offload)
  };
  // This rank's rows of the parameter's value and gradient, [rows, cols].
  static Tensor value_rows(Parameter& p);
  static Tensor grad_rows(Parameter& p);
  // Stages 1 and 2: every rank's updated rows to every rank, in gathers of about bucket_mb each.
  void gather_updated_rows();

  AdamWHyper hyper_;
  ZeroShard zero_;
  bool offload_ = false;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// sqrt(sum over parameters of sum(grad^2)), accumulated in f64.
double grad_norm(ParameterRegistry& params);

}  // namespace strata

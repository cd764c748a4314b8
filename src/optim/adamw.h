// AdamW over a parameter registry, with master weights. When parameters are held in bf16/f16, the
// optimizer keeps an f32 master copy and f32 moments, updates the master, and rounds it back into
// the parameter; f32/f64 parameters are their own master.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "model/parameter.h"

namespace strata {

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to parameters whose weight_decay flag is set
};

// ZeRO stage 1 (Rajbhandari et al. 2020) over a data-parallel group: every parameter's rows
// (dim 0; a 1-D parameter's elements) are cut into `size` runs of ceil(rows / size), rank r keeping
// the master weights and moments of run r only (runs past the end are empty), so any size works.
// After each rank has updated its rows, one all-gather of a flat buffer (every parameter's run,
// padded to the common run length, back to back) gives every rank the whole updated parameters.
struct ZeroShard {
  Communicator* group = nullptr;  // nullptr: no sharding (every rank keeps all the state)
  int rank = 0;
  int size = 1;
  bool active() const { return group != nullptr && size > 1; }
};

class AdamW {
 public:
  AdamW(ParameterRegistry& params, const AdamWHyper& hyper, const ZeroShard& zero = {});

  // One update with learning rate `lr`; every gradient is first multiplied by `grad_scale`
  // (1 / loss scale, times the clipping factor). Weight decay only where the parameter asks.
  void step(double lr, double grad_scale);
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
  std::vector<NamedState> state();
  void set_steps_taken(int64_t steps) { step_ = steps; }

 private:
  struct Slot {
    Parameter* param;
    Tensor master;  // undefined when the parameter is its own master
    Tensor m, v;
    int64_t row_begin = 0, row_end = 0;  // this rank's rows (all of them without ZeRO)
    int64_t run_rows = 0;                // ZeRO: every rank's run length, ceil(rows / size)
  };
  // The parameter's local value or gradient as [rows, cols] (a 1-D one as [numel, 1]).
  static Tensor as_rows(const Tensor& t);
  void gather_updated();  // ZeRO: every rank's updated rows to every rank

  AdamWHyper hyper_;
  ZeroShard zero_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// sqrt(sum over parameters of sum(grad^2)), accumulated in f64.
double grad_norm(ParameterRegistry& params);

}  // namespace strata

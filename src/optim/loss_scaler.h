// Dynamic loss scaling for fp16 (Micikevicius et al., "Mixed Precision Training", 2018): the loss
// is multiplied by `scale` before backward so small gradients survive fp16's range; a step whose
// gradients overflowed (non-finite norm) is skipped and the scale halved; after `growth_interval`
// good steps in a row the scale doubles.
#pragma once

#include <cstdint>

namespace strata {

struct LossScalerState {
  double scale = 65536.0;
  int64_t good_steps = 0;  // consecutive finite steps since the last change
  int64_t skipped_steps = 0;
};

class LossScaler {
 public:
  explicit LossScaler(bool enabled, double initial_scale = 65536.0, int64_t growth_interval = 1000)
      : enabled_(enabled), growth_interval_(growth_interval) {
    state_.scale = enabled ? initial_scale : 1.0;
  }
  bool enabled() const { return enabled_; }
  double scale() const { return state_.scale; }
  // Reports the unscaled-or-not gradient norm of this step; returns true when the step may be
  // applied, false when it must be skipped (overflow).
  bool update(double grad_norm);
  const LossScalerState& state() const { return state_; }
  void restore(const LossScalerState& state) { state_ = state; }

 private:
  bool enabled_;
  int64_t growth_interval_;
  LossScalerState state_;
};

}  // namespace strata

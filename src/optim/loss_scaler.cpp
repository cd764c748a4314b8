#include "optim/loss_scaler.h"

#include <cmath>

#include "core/log.h"

namespace strata {

bool LossScaler::update(double grad_norm) {
  const bool finite = std::isfinite(grad_norm);
  if (!enabled_) return finite;
  if (!finite) {
    // Halve, but keep the scale at 1 or above: below that fp16 loses small gradients for nothing.
    state_.scale = std::max(1.0, state_.scale * 0.5);
    state_.good_steps = 0;
    ++state_.skipped_steps;
    log::warn("fp16 gradients overflowed: step skipped, loss scale now ", state_.scale);
    return false;
  }
  if (++state_.good_steps >= growth_interval_) {
    state_.scale *= 2.0;
    state_.good_steps = 0;
  }
  return true;
}

}  // namespace strata

#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace strata {

double LrSchedule::at(int64_t step) const {
  STRATA_CHECK(step >= 1, "learning-rate schedule: steps are 1-based, got ", step);
  if (warmup_steps > 0 && step <= warmup_steps)
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == "constant") return lr;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double p =
      std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  if (kind == "cosine") return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  if (kind == "linear") return lr - (lr - min_lr) * p;
  STRATA_FAIL("unknown learning-rate schedule '", kind, "' (valid: cosine, linear, constant)");
}

}  // namespace strata

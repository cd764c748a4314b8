// Learning-rate schedule: linear warmup from 0 to lr over warmup_steps, then cosine or linear
// decay to min_lr at the last step (or constant).
#pragma once

#include <cstdint>
#include <string>

namespace strata {

struct LrSchedule {
  double lr = 6e-4;
  double min_lr = 6e-5;
  int64_t warmup_steps = 100;
  int64_t total_steps = 1000;
  std::string kind = "cosine";  // cosine | linear | constant

  // The rate for optimizer step `step` (1-based):
  //   step <= warmup:  lr * step / warmup
  //   after:           p = (step - warmup) / (total - warmup) in [0, 1]
  //                    cosine: min_lr + (lr - min_lr) (1 + cos(pi p)) / 2
  //                    linear: lr - (lr - min_lr) p;   constant: lr
  double at(int64_t step) const;
};

}  // namespace strata

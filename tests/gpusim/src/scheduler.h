// Runs a kernel launch on the host: every block in the order the Schedule gives, and within a block
// every thread as a fiber. A fiber runs until it reaches a barrier or a warp collective (or ends);
// the scheduler sweeps the runnable fibers in the block's current order, releases a barrier when
// every live thread has reached it (and draws a new order for the next phase), and reports a
// deadlock when nothing can run. Faults inside a kernel end it with a KernelFault.
#pragma once

#include <stdexcept>
#include <string>

#include "gpusim/control.h"
#include "gpusim/kernel.h"

namespace gpusim {

struct KernelFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws KernelFault; counts blocks, threads and switches into `counters`.
void run_kernel(const KernelLaunch& launch, const Schedule& schedule, Counters& counters);

// A permutation of [0, n) for the schedule, phase and salt (block index or grid).
void make_order(const Schedule& schedule, uint64_t salt, uint64_t phase, unsigned n, unsigned* out);

}  // namespace gpusim

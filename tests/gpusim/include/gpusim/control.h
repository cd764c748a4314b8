// Test controls of the simulated GPU: the thread and block orders, fault recovery, and counters.
// Tests include this; Strata's own code never does. The environment sets the starting values:
//   STRATA_GPUSIM_ORDER   ascending | descending | random[:SEED]   (default random:1)
//   STRATA_GPUSIM_MEMORY_MB  simulated device memory (default 16384; reserved, not committed)
//   STRATA_GPUSIM_STACK_KB   stack of each simulated thread (default 256)
#pragma once

#include <cstdint>
#include <string>

namespace gpusim {

// The order in which the threads of a block run between barriers, and blocks run in a grid.
// ascending: by index; descending: reversed; random: a fresh permutation for every block and
// every barrier phase, drawn from `seed`.
enum class Order { ascending, descending, random };
struct Schedule {
  Order order = Order::random;
  uint64_t seed = 1;
};
void set_schedule(const Schedule& schedule);
Schedule schedule();
std::string schedule_name(const Schedule& schedule);  // "ascending", "random:7"

// After a kernel fault (a deadlock, a device check, a bad access inside a kernel) every runtime
// call returns cudaErrorLaunchFailure, as a real context does; last_fault() says what happened.
// clear_fault() lets an instrument test go on after planting one.
std::string last_fault();
void clear_fault();

struct Counters {
  uint64_t kernels = 0;         // kernel launches executed
  uint64_t blocks = 0;
  uint64_t threads = 0;
  uint64_t switches = 0;        // fiber switches
  uint64_t copies = 0;          // memcpy/memset operations executed
  uint64_t bytes_to_host = 0;   // bytes copies were asked to move device -> host (at the call)
  uint64_t bytes_to_device = 0; // bytes copies were asked to move host -> device (at the call)
  // Calls that made the host wait for device work: device, stream and event synchronisation
  // (and their queries, which run what they observe), and blocking copies to or from the host.
  uint64_t host_waits = 0;
  uint64_t pending_ops = 0;     // queued on some stream and not yet run
  uint64_t device_bytes_in_use = 0;
};
Counters counters();

// Runs everything queued on every stream (what cudaDeviceSynchronize does), for tests that must
// drain before inspecting counters.
void drain_all();

}  // namespace gpusim

// The collective watchdog: a thread that notices when this rank has waited in one communication
// operation longer than a timeout (a peer died or hangs) and ends the process with one line that
// names the operation, its group, the training step, and what every other rank was doing, instead
// of hanging forever. The launcher then takes the other ranks down (Open MPI, and Slurm with
// --kill-on-bad-exit, end a job when one of its processes exits with an error).
//
// Every public Communicator operation and every wait on a handle marks itself with a
// WatchdogScope. While running, each rank's watchdog writes a one-line state file every two
// seconds into a shared folder (the run's out_dir): the rank that times out reads the others' to
// say which ranks had not arrived.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace strata {

class Watchdog {
 public:
  // Starts the thread (once per process); timeout_s <= 0 disables it.
  static void start(double timeout_s, const std::string& state_dir, int rank, int world);
  static void stop();
  static void set_step(int64_t step);
  // What to do when this rank times out, before the process ends: each NCCL communicator
  // registers its ncclCommAbort, so the kernels that wait for a dead peer end and free the GPU.
  // Hooks run on the watchdog's thread while the main thread is still blocked in the operation;
  // a hook must not take locks the main thread may hold. Returns an id for remove_abort_hook.
  static int add_abort_hook(std::function<void()> hook);
  static void remove_abort_hook(int id);
};

// Marks the calling thread as inside a communication operation described by `what` (must
// outlive the scope). Nested scopes count once.
class WatchdogScope {
 public:
  explicit WatchdogScope(const std::string& what);
  ~WatchdogScope();
  WatchdogScope(const WatchdogScope&) = delete;
  WatchdogScope& operator=(const WatchdogScope&) = delete;
};

}  // namespace strata

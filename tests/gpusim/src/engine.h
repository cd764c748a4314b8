// The simulated device as one object: its memory, its streams and the queued work on them, the
// kernel schedule and the sticky fault. Every runtime call takes the engine's lock; queued work
// runs on the thread that synchronises, under that lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_memory.h"
#include "gpusim/control.h"
#include "gpusim/kernel.h"

namespace gpusim {

struct StreamState;

struct EventState {
  unsigned flags = 0;
  std::shared_ptr<StreamState> stream;  // where it was last recorded
  uint64_t seq = 0;                     // ... as that stream's op number
  double time_ms = 0;                   // when that record ran
};

struct Op {
  enum class Kind { device, host, wait, record } kind = Kind::device;
  std::function<void()> run;            // device (kernels, copies) or host work
  std::shared_ptr<StreamState> wait_stream;
  uint64_t wait_seq = 0;
  std::shared_ptr<EventState> event;
  uint64_t seq = 0;
};

struct StreamState {
  unsigned flags = 0;
  bool legacy = false;
  std::deque<Op> queue;
  uint64_t submitted = 0, completed = 0;
  bool draining = false;
};

class Engine {
 public:
  static Engine& get();

  std::recursive_mutex mutex;
  DeviceMemory memory;
  std::map<uintptr_t, size_t> host_allocations;  // cudaHostAlloc'd: start -> bytes
  std::shared_ptr<StreamState> legacy;
  std::vector<std::shared_ptr<StreamState>> streams;  // live ones, legacy first
  std::unordered_map<const void*, int> max_dynamic_shared;  // cudaFuncSetAttribute's opt-ins
  Schedule schedule;
  Counters counters;
  std::string fault;  // the sticky fault; empty while the device is healthy
  int device_count = 1;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  // The stream a handle names (0 and cudaStreamLegacy: the legacy default stream); nullptr for a
  // handle that names none.
  std::shared_ptr<StreamState> stream(cudaStream_t handle);
  // Queues op on s with CUDA's legacy-stream ordering: work on the legacy stream waits for all
  // blocking streams, work on a blocking stream waits for the legacy stream. Returns its number.
  uint64_t enqueue(const std::shared_ptr<StreamState>& s, Op op);
  // Runs s's queue until op number `target` has completed (waits run the streams they name).
  void drain(StreamState& s, uint64_t target);
  void drain_all();
  void set_fault(const std::string& message);
  bool faulted() const { return !fault.empty(); }
  double now_ms() const;

 private:
  Engine();
};

}  // namespace gpusim

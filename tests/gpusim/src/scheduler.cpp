#include "scheduler.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "device_memory.h"
#include "fiber.h"

namespace gpusim {

ThreadState* current = nullptr;

namespace {

enum class State : uint8_t { runnable, at_barrier, at_warp, done };

struct PendingCopy {
  char* dst;
  std::array<unsigned char, 16> data;
  int bytes;
};

struct SimThread {
  ThreadState ts;
  State state = State::runnable;
  Fiber* fiber = nullptr;
  const char* waiting_in = "";  // the collective it waits in, for deadlock messages
  std::vector<PendingCopy> uncommitted;
  std::deque<std::vector<PendingCopy>> committed;
};

struct Collective {
  const char* what;
  unsigned mask;
  unsigned arrived = 0;
  Combine combine;
  std::array<const void*, 32> in{};
  std::array<void*, 32> out{};
};

struct Block {
  const KernelLaunch* launch = nullptr;
  std::vector<SimThread>* threads = nullptr;
  unsigned total = 0;
  unsigned exited = 0;
  unsigned at_barrier = 0;
  BarrierReduce reduce = BarrierReduce::none;
  int predicate_sum = 0;
  int barrier_result = 0;
  std::vector<std::vector<Collective>> warps;  // pending collectives of each warp
  std::vector<unsigned> warp_lanes;            // the lanes each warp has (a last partial warp has fewer)
  std::string fault;                           // set when a thread faulted: the block is abandoned
};

Block* block = nullptr;            // the block running now
SimThread* running = nullptr;      // its fiber running now
std::vector<std::unique_ptr<Fiber>> fibers;
std::vector<char> shared_storage;

size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* env = std::getenv("STRATA_GPUSIM_STACK_KB");
    const long kb = env ? std::atol(env) : 256;
    return static_cast<size_t>(kb > 16 ? kb : 16) << 10;
  }();
  return bytes;
}

bool stack_fault(const void* addr, char* buf, size_t size) {
  for (const auto& f : fibers) {
    const char* guard = f->guard_page();
    const auto* p = static_cast<const char*>(addr);
    if (p >= guard && p < f->stack_low()) {
      std::snprintf(buf, size,
                    "gpusim: a simulated thread of kernel '%s' overflowed its %zu KiB stack "
                    "(raise STRATA_GPUSIM_STACK_KB)\n",
                    running_kernel ? running_kernel : "?", f->stack_bytes() >> 10);
      return true;
    }
  }
  return false;
}

std::string thread_name(const ThreadState& t) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u) thread (%u, %u, %u)", t.block_idx.x, t.block_idx.y,
                t.block_idx.z, t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
  return buf;
}

// A fault inside device code: recorded on the block, which the scheduler then abandons.
struct DeviceFault {
  std::string message;
};

[[noreturn]] void fail(const std::string& message) { throw DeviceFault{message}; }

void apply(std::vector<PendingCopy>& group) {
  for (const PendingCopy& c : group) std::memcpy(c.dst, c.data.data(), static_cast<size_t>(c.bytes));
  group.clear();
}

void check_exit_against_waiters(SimThread& t) {
  if (block->at_barrier > 0)
    fail(thread_name(t.ts) + " exited while " + std::to_string(block->at_barrier) +
         " threads wait at __syncthreads: a barrier in divergent code (a hang or corruption on a real GPU)");
  for (const Collective& c : block->warps[t.ts.warp])
    if (c.mask & (1u << t.ts.lane))
      fail(thread_name(t.ts) + " exited while lanes of its warp wait for it in " + c.what);
}

void thread_main(void* arg) {
  auto* t = static_cast<SimThread*>(arg);
  try {
    block->launch->body();
    check_exit_against_waiters(*t);
  } catch (const DeviceFault& f) {
    if (block->fault.empty()) block->fault = f.message;
  } catch (const std::exception& e) {
    if (block->fault.empty()) block->fault = thread_name(t->ts) + ": " + e.what();
  } catch (...) {
    if (block->fault.empty()) block->fault = thread_name(t->ts) + ": an exception";
  }
  t->state = State::done;
  ++block->exited;
  t->fiber->yield_to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string deadlock_message(const Block& b) {
  unsigned waiting_warp = 0;
  std::string detail;
  for (const SimThread& t : *b.threads)
    if (t.state == State::at_warp) ++waiting_warp;
  for (size_t w = 0; w < b.warps.size(); ++w)
    for (const Collective& c : b.warps[w]) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "; warp %zu: %s with mask 0x%08x has lanes 0x%08x", w, c.what, c.mask, c.arrived);
      detail += buf;
    }
  return "deadlock: " + std::to_string(b.at_barrier) + " threads wait at __syncthreads, " +
         std::to_string(waiting_warp) + " in warp collectives, " + std::to_string(b.exited) + " of " +
         std::to_string(b.total) + " have exited" + detail;
}

void run_block(const KernelLaunch& launch, const Schedule& schedule, uint64_t block_linear, uint64_t salt,
               std::vector<SimThread>& threads, Counters& counters) {
  const dim3 bd = launch.block, gd = launch.grid;
  const unsigned n = bd.x * bd.y * bd.z;
  Block b;
  b.launch = &launch;
  b.threads = &threads;
  b.total = n;
  const unsigned n_warps = (n + 31) / 32;
  b.warps.assign(n_warps, {});
  b.warp_lanes.assign(n_warps, 0xffffffffu);
  if (n % 32) b.warp_lanes.back() = (1u << (n % 32)) - 1;
  block = &b;

  if (shared_storage.size() < launch.dynamic_shared_bytes + 128) shared_storage.resize(launch.dynamic_shared_bytes + 128);
  char* shared = shared_storage.data() + (128 - reinterpret_cast<uintptr_t>(shared_storage.data()) % 128) % 128;
  std::memset(shared, 0xff, launch.dynamic_shared_bytes);  // unwritten shared memory reads as NaN

  const uint3 bidx{static_cast<unsigned>(block_linear % gd.x), static_cast<unsigned>(block_linear / gd.x % gd.y),
                   static_cast<unsigned>(block_linear / (uint64_t{gd.x} * gd.y))};
  for (unsigned i = 0; i < n; ++i) {
    SimThread& t = threads[i];
    t.ts.thread_idx = {i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y)};
    t.ts.block_idx = bidx;
    t.ts.block_dim = bd;
    t.ts.grid_dim = gd;
    t.ts.linear = i;
    t.ts.lane = i % 32;
    t.ts.warp = i / 32;
    t.ts.dynamic_shared = shared;
    t.ts.dynamic_shared_bytes = launch.dynamic_shared_bytes;
    t.state = State::runnable;
    t.fiber = fibers[i].get();
    t.uncommitted.clear();
    t.committed.clear();
    t.fiber->reset(&thread_main, &t);
  }

  std::vector<unsigned> order(n);
  uint64_t phase = 0;
  make_order(schedule, salt ^ (block_linear * 0x2545f4914f6cdd1dull), phase, n, order.data());
  for (;;) {
    bool ran = false;
    for (unsigned idx : order) {
      SimThread& t = threads[idx];
      if (t.state != State::runnable) continue;
      ran = true;
      running = &t;
      current = &t.ts;
      ++counters.switches;
      t.fiber->resume();
      current = nullptr;
      running = nullptr;
      if (!b.fault.empty()) {
        block = nullptr;
        throw KernelFault(b.fault);
      }
    }
    if (b.exited == n) break;
    if (ran) continue;
    // Nothing can run: a barrier every thread has reached opens; anything else is a deadlock.
    if (b.at_barrier == n) {
      b.barrier_result = b.reduce == BarrierReduce::count ? b.predicate_sum
                         : b.reduce == BarrierReduce::any ? (b.predicate_sum > 0)
                         : b.reduce == BarrierReduce::all ? (b.predicate_sum == static_cast<int>(n))
                                                          : 0;
      b.at_barrier = 0;
      b.predicate_sum = 0;
      b.reduce = BarrierReduce::none;
      for (SimThread& t : threads) t.state = State::runnable;
      make_order(schedule, salt ^ (block_linear * 0x2545f4914f6cdd1dull), ++phase, n, order.data());
      continue;
    }
    std::string message = "block (" + std::to_string(bidx.x) + ", " + std::to_string(bidx.y) + ", " +
                          std::to_string(bidx.z) + "): " + deadlock_message(b);
    block = nullptr;
    throw KernelFault(message);
  }
  block = nullptr;
  counters.threads += n;
  ++counters.blocks;
}

}  // namespace

void make_order(const Schedule& schedule, uint64_t salt, uint64_t phase, unsigned n, unsigned* out) {
  for (unsigned i = 0; i < n; ++i) out[i] = i;
  if (schedule.order == Order::descending) {
    for (unsigned i = 0; i < n; ++i) out[i] = n - 1 - i;
  } else if (schedule.order == Order::random) {
    uint64_t state = schedule.seed ^ (salt * 0x9e3779b97f4a7c15ull) ^ (phase * 0xd1b54a32d192ed03ull);
    for (unsigned i = n; i > 1; --i) {
      const unsigned j = static_cast<unsigned>(splitmix(state) % i);
      std::swap(out[i - 1], out[j]);
    }
  }
}

void run_kernel(const KernelLaunch& launch, const Schedule& schedule, Counters& counters) {
  describe_stack_fault = &stack_fault;
  const unsigned n = launch.block.x * launch.block.y * launch.block.z;
  while (fibers.size() < n) fibers.push_back(std::make_unique<Fiber>(stack_bytes()));
  std::vector<SimThread> threads(n);
  const uint64_t blocks = uint64_t{launch.grid.x} * launch.grid.y * launch.grid.z;
  // Every launch gets its own orders: the salt mixes in how many kernels ran before.
  const uint64_t salt = counters.kernels * 0x632be59bd9b4e019ull + 1;
  std::vector<unsigned> order;
  if (blocks <= 0xffffffffull) {
    order.resize(static_cast<size_t>(blocks));
    make_order(schedule, salt, ~uint64_t{0}, static_cast<unsigned>(blocks), order.data());
  }
  running_kernel = launch.name;
  try {
    for (uint64_t i = 0; i < blocks; ++i) run_block(launch, schedule, order[i], salt, threads, counters);
  } catch (const KernelFault& f) {
    running_kernel = nullptr;
    throw KernelFault(std::string("kernel '") + launch.name + "' " + f.what());
  }
  running_kernel = nullptr;
  ++counters.kernels;
}

// ---- primitives called from device code ----

ThreadState& device_thread(const char* what) {
  if (!current) {
    std::fprintf(stderr, "gpusim: %s called from host code (it exists only inside a kernel)\n", what);
    std::abort();
  }
  return *current;
}

int block_barrier(int predicate, BarrierReduce reduce) {
  device_thread("__syncthreads");
  SimThread& t = *running;
  if (block->exited > 0)
    fail(thread_name(t.ts) + " reached __syncthreads after " + std::to_string(block->exited) +
         " threads of its block exited: a barrier in divergent code");
  if (block->at_barrier > 0 && block->reduce != reduce)
    fail(thread_name(t.ts) + " reached a different form of __syncthreads than the threads already waiting");
  block->reduce = reduce;
  ++block->at_barrier;
  block->predicate_sum += predicate != 0;
  t.state = State::at_barrier;
  t.fiber->yield_to_scheduler();
  return block->barrier_result;
}

void warp_collective(const char* what, unsigned mask, const void* in, void* out, Combine combine) {
  ThreadState& ts = device_thread(what);
  SimThread& t = *running;
  const unsigned bit = 1u << ts.lane;
  if (!(mask & bit))
    fail(thread_name(ts) + " called " + what + " with a mask that does not hold its own lane");
  if (mask & ~block->warp_lanes[ts.warp]) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " with mask 0x%08x naming lanes its warp does not have (0x%08x)", mask,
                  block->warp_lanes[ts.warp]);
    fail(thread_name(ts) + " called " + what + buf);
  }
  auto& pending = block->warps[ts.warp];
  Collective* c = nullptr;
  for (Collective& p : pending)
    if (p.mask == mask) c = &p;
  if (!c) {
    for (const Collective& p : pending)
      if (p.mask & bit) fail(thread_name(ts) + " entered " + what + " while other lanes wait for it in " + p.what);
    pending.push_back(Collective{what, mask, 0, combine, {}, {}});
    c = &pending.back();
  } else if (std::strcmp(c->what, what) != 0 || c->combine != combine) {
    fail(thread_name(ts) + " reached " + what + " while lanes of the same mask wait in " + c->what +
         " (divergent warp collectives)");
  }
  c->in[ts.lane] = in;
  c->out[ts.lane] = out;
  c->arrived |= bit;
  // Lanes of the mask that have exited can never arrive.
  for (unsigned l = 0; l < 32; ++l)
    if ((mask & (1u << l)) && (*block->threads)[ts.warp * 32 + l].state == State::done)
      fail(thread_name(ts) + " waits in " + what + " for lane " + std::to_string(l) + ", which has exited");
  if (c->arrived == mask) {
    c->combine(c->in.data(), c->out.data(), mask);
    for (unsigned l = 0; l < 32; ++l)
      if ((mask & (1u << l)) && l != ts.lane) (*block->threads)[ts.warp * 32 + l].state = State::runnable;
    pending.erase(pending.begin() + (c - pending.data()));
    return;
  }
  t.state = State::at_warp;
  t.waiting_in = what;
  t.fiber->yield_to_scheduler();
}

unsigned active_lanes() {
  ThreadState& ts = device_thread("__activemask");
  unsigned mask = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((block->warp_lanes[ts.warp] & (1u << l)) && (*block->threads)[ts.warp * 32 + l].state != State::done)
      mask |= 1u << l;
  return mask;
}

void cp_async(void* shared_dst, const void* global_src, int bytes, int src_bytes) {
  ThreadState& ts = device_thread("cp.async");
  if (bytes != 4 && bytes != 8 && bytes != 16)
    fail(thread_name(ts) + ": cp.async of " + std::to_string(bytes) + " bytes (4, 8 or 16 only)");
  if (reinterpret_cast<uintptr_t>(shared_dst) % static_cast<uintptr_t>(bytes) ||
      reinterpret_cast<uintptr_t>(global_src) % static_cast<uintptr_t>(bytes))
    fail(thread_name(ts) + ": cp.async of " + std::to_string(bytes) + " bytes from a misaligned address");
  PendingCopy c{static_cast<char*>(shared_dst), {}, bytes};
  const int n = src_bytes < bytes ? (src_bytes < 0 ? 0 : src_bytes) : bytes;
  std::memcpy(c.data.data(), global_src, static_cast<size_t>(n));  // the rest is zero-filled
  running->uncommitted.push_back(c);
}

void cp_async_commit() {
  device_thread("cp.async.commit_group");
  running->committed.push_back(std::move(running->uncommitted));
  running->uncommitted.clear();
}

void cp_async_wait(int pending_groups_allowed) {
  device_thread("cp.async.wait_group");
  auto& groups = running->committed;
  while (static_cast<int>(groups.size()) > pending_groups_allowed) {
    apply(groups.front());
    groups.pop_front();
  }
}

void device_fault(const char* message) {
  ThreadState& ts = device_thread("__trap");
  fail(thread_name(ts) + ": " + message);
}

}  // namespace gpusim

// Where tensor memory comes from. An Allocator is an object handed to whoever makes tensors. All of
// them keep pools of freed blocks: the process-wide CPU one here, and the CUDA caching allocator
// and pinned host allocator (src/core/cuda/), which are owned by the run that creates them.
#pragma once

#include <cstddef>

#include "core/caching_pool.h"
#include "core/dtype.h"

namespace strata {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;
  // Returns at least `bytes` bytes aligned to 256 bytes (a CUDA-friendly and AVX-friendly bound);
  // throws an Error naming the size when the memory cannot be had.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
};

// Host memory (aligned_alloc) behind a caching pool: freed blocks are reused, not returned to the
// C library. One instance serves the whole process and lives until it exits.
Allocator& cpu_allocator();
// The host pool's counters (in use, reserved, peak, backing calls), and a restart of its peak.
PoolStats cpu_memory_stats();
void cpu_memory_reset_peak();

}  // namespace strata

// Where tensor memory comes from. An Allocator is an object handed to whoever makes tensors. All of
// them keep pools of freed blocks: the process-wide CPU one here, and the CUDA caching allocator
// and pinned host allocator (src/core/cuda/), which are owned by the run that creates them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

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

// What host memory holds, for the memory accounting of model states (ZeRO, docs/zero.md). Every
// block the host pool hands out is counted, at its requested size, under the kind and place of
// the innermost MemoryScope open on the allocating thread (none: other, on the device).
enum class MemoryKind : uint8_t { other, params, grads, optimizer };
inline constexpr int kMemoryKinds = 4;
// Where a model state lives: on the compute device, or offloaded to host memory. A CPU run
// computes in host memory, so both are host memory there; the distinction is what a GPU run would
// hold on the GPU.
enum class MemoryPlace : uint8_t { device, host };

class MemoryScope {
 public:
  explicit MemoryScope(MemoryKind kind, MemoryPlace place = MemoryPlace::device);
  ~MemoryScope();
  MemoryScope(const MemoryScope&) = delete;
  MemoryScope& operator=(const MemoryScope&) = delete;

 private:
  uint8_t previous_;
};

// Bytes in use now by [place][kind], as requested (not rounded up to the pool's block sizes).
struct MemoryByKind {
  std::array<std::array<int64_t, kMemoryKinds>, 2> bytes{};
  int64_t at(MemoryPlace place, MemoryKind kind) const {
    return bytes[static_cast<size_t>(place)][static_cast<size_t>(kind)];
  }
};
MemoryByKind cpu_memory_by_kind();

}  // namespace strata

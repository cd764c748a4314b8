#include "core/allocator.h"

#include <sys/mman.h>

#include <cstdlib>

#include "core/caching_pool.h"
#include "core/error.h"

namespace strata {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kHugePage = size_t{2} << 20;

// Host memory from aligned_alloc. Blocks of 2 MiB and more are aligned to 2 MiB and advised as
// transparent huge pages (where the kernel's policy is "madvise"): a training step's weights,
// gradients and large activations then take one page fault and one TLB entry per 2 MiB instead of
// per 4 KiB.
void* host_allocate(size_t bytes) {
  const size_t align = bytes >= kHugePage ? kHugePage : kAlign;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* ptr = std::aligned_alloc(align, rounded);
  if (ptr && align == kHugePage) madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only: may fail
  return ptr;
}

// Freed blocks are kept and handed out again (see CachingPool): a training step allocates the same
// activation sizes every step, and giving them back to the C library let it return the memory to
// the kernel after each backward, so the next forward page-faulted and zero-filled it again.
class CpuAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cpu(); }
  void* allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void deallocate(void* ptr, size_t) override { pool_.deallocate(ptr); }
  PoolStats stats() const { return pool_.stats(); }
  void reset_peak() { pool_.reset_peak(); }

 private:
  CachingPool pool_{"host memory", host_allocate, [](void* p) { std::free(p); }};
};

CpuAllocator& the_cpu_allocator() {
  // Never destroyed: tensors held by other static objects may outlive any destruction order.
  static CpuAllocator* allocator = new CpuAllocator;
  return *allocator;
}

}  // namespace

Allocator& cpu_allocator() { return the_cpu_allocator(); }

PoolStats cpu_memory_stats() { return the_cpu_allocator().stats(); }

void cpu_memory_reset_peak() { the_cpu_allocator().reset_peak(); }

}  // namespace strata

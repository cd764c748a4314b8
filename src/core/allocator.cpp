#include "core/allocator.h"

#include <sys/mman.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "core/caching_pool.h"
#include "core/error.h"

namespace strata {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPage = 4096;
// The host pool's granularity for blocks of 1 MiB and more (CachingPool::round_size).
constexpr size_t kHostLargeRound = size_t{256} << 10;

// The open MemoryScope of this thread: place * kMemoryKinds + kind.
thread_local uint8_t current_tag = 0;

// Host memory from posix_memalign. Blocks of 2 MiB and more are aligned to 2 MiB and advised as
// transparent huge pages (where the kernel's policy is "madvise"): a training step's weights,
// gradients and large activations then take one page fault and one TLB entry per 2 MiB instead of
// per 4 KiB. Their size is only rounded to 4 KiB pages, so a 2.25 MiB weight holds 2.25 MiB.
void* host_allocate(size_t bytes) {
  const size_t align = bytes >= kHugePage ? kHugePage : kAlign;
  const size_t rounded = (bytes + kPage - 1) / kPage * kPage;
  void* ptr = nullptr;
  if (posix_memalign(&ptr, align, rounded) != 0) return nullptr;
  if (align == kHugePage) madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only: may fail
  return ptr;
}

// Freed blocks are kept and handed out again (see CachingPool): a training step allocates the same
// activation sizes every step, and giving them back to the C library let it return the memory to
// the kernel after each backward, so the next forward page-faulted and zero-filled it again.
class CpuAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cpu(); }
  void* allocate(size_t bytes) override {
    void* ptr = pool_.allocate(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    tags_[ptr] = {current_tag, bytes};
    by_tag_[current_tag] += static_cast<int64_t>(bytes);
    return ptr;
  }
  void deallocate(void* ptr, size_t) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = tags_.find(ptr);
      if (it != tags_.end()) {
        by_tag_[it->second.first] -= static_cast<int64_t>(it->second.second);
        tags_.erase(it);
      }
    }
    pool_.deallocate(ptr);
  }
  PoolStats stats() const { return pool_.stats(); }
  void reset_peak() { pool_.reset_peak(); }
  MemoryByKind by_kind() const {
    std::lock_guard<std::mutex> lock(mutex_);
    MemoryByKind out;
    for (size_t tag = 0; tag < by_tag_.size(); ++tag) out.bytes[tag / kMemoryKinds][tag % kMemoryKinds] = by_tag_[tag];
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<void*, std::pair<uint8_t, size_t>> tags_;  // block -> (tag, requested bytes)
  std::array<int64_t, 2 * kMemoryKinds> by_tag_{};
  CachingPool pool_{"host memory", host_allocate, [](void* p) { std::free(p); }, kHostLargeRound};
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

MemoryByKind cpu_memory_by_kind() { return the_cpu_allocator().by_kind(); }

MemoryScope::MemoryScope(MemoryKind kind, MemoryPlace place) : previous_(current_tag) {
  current_tag = static_cast<uint8_t>(static_cast<int>(place) * kMemoryKinds + static_cast<int>(kind));
}

MemoryScope::~MemoryScope() { current_tag = previous_; }

}  // namespace strata

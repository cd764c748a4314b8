#include "core/allocator.h"

#include <cstdlib>

#include "core/error.h"

namespace strata {
namespace {

class CpuAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cpu(); }
  void* allocate(size_t bytes) override {
    constexpr size_t kAlign = 256;
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* ptr = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
    STRATA_CHECK(ptr != nullptr, "host allocation of ", bytes, " bytes failed");
    return ptr;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
};

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator allocator;
  return allocator;
}

}  // namespace strata

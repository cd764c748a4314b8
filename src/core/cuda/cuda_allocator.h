// CUDA memory for tensors: a caching allocator for one device, and pinned (page-locked) host memory
// for staging and offload. Both keep freed blocks for reuse (core/caching_pool.h), because
// cudaFree and cudaFreeHost synchronise the whole device.
//
// Stream semantics: blocks are reused in allocation order on the compute stream. A block that a
// communication stream still reads must be kept alive by its owner (the tensor) until that stream's
// work is waited on, which the communicators' handles do.
#pragma once

#include "core/allocator.h"
#include "core/caching_pool.h"

namespace strata {

class CudaCachingAllocator final : public Allocator {
 public:
  explicit CudaCachingAllocator(int device_index);
  Device device() const override { return Device::cuda(device_index_); }
  void* allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void deallocate(void* ptr, size_t) override { pool_.deallocate(ptr); }
  void release_cached() { pool_.release_cached(); }
  PoolStats stats() const { return pool_.stats(); }

 private:
  int device_index_;
  CachingPool pool_;
};

// Page-locked host memory (cudaHostAlloc, portable across devices): tensors on the CPU device
// that the GPU can copy to and from asynchronously at full PCIe/NVLink-C2C speed.
class PinnedHostAllocator final : public Allocator {
 public:
  PinnedHostAllocator();
  Device device() const override { return Device::cpu(); }
  void* allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void deallocate(void* ptr, size_t) override { pool_.deallocate(ptr); }
  void release_cached() { pool_.release_cached(); }
  PoolStats stats() const { return pool_.stats(); }

 private:
  CachingPool pool_;
};

// Number of visible GPUs; 0 when there is no driver or no device (never throws), so tests can skip.
int cuda_device_count();

}  // namespace strata

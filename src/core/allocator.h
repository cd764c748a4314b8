// Where tensor memory comes from. An Allocator is an object handed to whoever makes tensors; the
// CPU one is stateless, the CUDA caching allocator and the pinned host allocator (src/core/cuda/)
// keep pools and are owned by the run that creates them.
#pragma once

#include <cstddef>

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

// Plain host memory (aligned_alloc). Stateless: one instance serves the whole process.
Allocator& cpu_allocator();

}  // namespace strata

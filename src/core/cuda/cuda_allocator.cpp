#include "core/cuda/cuda_allocator.h"

#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"
#include "core/log.h"

namespace strata {
namespace {

// Allocates on `device`; nullptr when the device is out of memory (the pool then empties its cache
// and retries), an Error for any other failure.
void* device_malloc(int device, size_t bytes) {
  int previous = 0;
  STRATA_CUDA_CHECK(cudaGetDevice(&previous));
  STRATA_CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  cudaError_t rc = cudaMalloc(&ptr, bytes);
  STRATA_CUDA_CHECK(cudaSetDevice(previous));
  if (rc == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error so later checks do not see it
    return nullptr;
  }
  STRATA_CUDA_CHECK(rc);
  return ptr;
}

void* pinned_malloc(size_t bytes) {
  void* ptr = nullptr;
  cudaError_t rc = cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable);
  if (rc == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  STRATA_CUDA_CHECK(rc);
  return ptr;
}

// Frees run from destructors too, so a failure is logged, not thrown.
void device_free(void* ptr) {
  cudaError_t rc = cudaFree(ptr);
  if (rc != cudaSuccess) log::error("cudaFree(", ptr, ") failed: ", detail::cuda_error_string(rc));
}

void pinned_free(void* ptr) {
  cudaError_t rc = cudaFreeHost(ptr);
  if (rc != cudaSuccess) log::error("cudaFreeHost(", ptr, ") failed: ", detail::cuda_error_string(rc));
}

}  // namespace

CudaCachingAllocator::CudaCachingAllocator(int device_index)
    : device_index_(device_index),
      pool_(
          "cuda:" + std::to_string(device_index),
          [device_index](size_t bytes) { return device_malloc(device_index, bytes); },
          device_free) {
  int count = cuda_device_count();
  STRATA_CHECK(device_index >= 0 && device_index < count, "CUDA device ", device_index,
               " requested but ", count, " devices are visible");
}

PinnedHostAllocator::PinnedHostAllocator()
    : pool_("pinned host", pinned_malloc, pinned_free) {}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace strata

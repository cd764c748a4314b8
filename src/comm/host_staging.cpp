#include "comm/host_staging.h"

#include <cstring>

#include "core/log.h"

#if STRATA_CUDA
#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"
#endif

namespace strata {

PinnedPool::~PinnedPool() {
#if STRATA_CUDA
  for (auto [ptr, bytes] : capacity_) {
    cudaError_t rc = cudaFreeHost(ptr);
    if (rc != cudaSuccess)
      log::warn("cudaFreeHost of a ", bytes,
                "-byte staging buffer failed: ", detail::cuda_error_string(rc));
  }
#endif
}

void* PinnedPool::acquire(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.lower_bound(bytes);
  if (it != free_.end()) {
    void* ptr = it->second;
    free_.erase(it);
    return ptr;
  }
#if STRATA_CUDA
  void* ptr = nullptr;
  STRATA_CUDA_CHECK(cudaMallocHost(&ptr, bytes == 0 ? 1 : bytes));
  capacity_[ptr] = bytes;
  return ptr;
#else
  STRATA_FAIL("pinned staging of ", bytes, " bytes needs the CUDA backend, which this build lacks");
#endif
}

void PinnedPool::release(void* ptr) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = capacity_.find(ptr);
  STRATA_CHECK(it != capacity_.end(), "PinnedPool::release of a pointer it did not give out");
  free_.emplace(it->second, ptr);
}

HostStage::~HostStage() {
  for (void* ptr : pinned_) pool_->release(ptr);
}

void* HostStage::host(const Tensor& t, bool copy_in, bool copy_out, bool private_copy) {
  void* host = nullptr;
  touched_.push_back(t);
  if (t.device().is_cpu()) {
    if (!private_copy) return t.raw();
    scratch_.push_back(Tensor::empty({t.numel()}, t.dtype()));
    host = scratch_.back().raw();
    if (copy_in) std::memcpy(host, t.raw(), t.nbytes());
  } else {
#if STRATA_CUDA
    host = pool_->acquire(t.nbytes());
    pinned_.push_back(host);
    if (copy_in && t.nbytes() > 0) {
      STRATA_CUDA_CHECK(cudaMemcpy(host, t.raw(), t.nbytes(), cudaMemcpyDeviceToHost));
    }
#else
    STRATA_FAIL("tensor ", t.describe(), " is on a device this build (no CUDA) cannot reach");
#endif
  }
  if (copy_out) outputs_.push_back({t, host});
  return host;
}

void HostStage::finish() {
  for (const Output& out : outputs_) {
    if (out.tensor.nbytes() == 0) continue;
    if (out.tensor.device().is_cpu()) {
      std::memcpy(out.tensor.raw(), out.host, out.tensor.nbytes());
    } else {
#if STRATA_CUDA
      STRATA_CUDA_CHECK(
          cudaMemcpy(out.tensor.raw(), out.host, out.tensor.nbytes(), cudaMemcpyHostToDevice));
#endif
    }
  }
  outputs_.clear();
}

}  // namespace strata

#include "comm/host_staging.h"

#include <cstring>

#include "core/log.h"

#if STRATA_CUDA
#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_device.h"
#endif

namespace strata {

#if STRATA_CUDA
namespace {

// Makes `waiter` wait for the work queued on `after` so far.
void order_after(cudaStream_t waiter, cudaStream_t after) {
  cudaEvent_t e = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  STRATA_CUDA_CHECK(cudaEventRecord(e, after));
  STRATA_CUDA_CHECK(cudaStreamWaitEvent(waiter, e, 0));
  STRATA_CUDA_CHECK(cudaEventDestroy(e));  // its resources go once the wait has used it
}

// An event recorded on `stream` now, destroyed with its last holder.
std::shared_ptr<void> event_after(cudaStream_t stream) {
  cudaEvent_t e = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  STRATA_CUDA_CHECK(cudaEventRecord(e, stream));
  return std::shared_ptr<void>(e, [](void* event) { cudaEventDestroy(static_cast<cudaEvent_t>(event)); });
}

}  // namespace
#endif

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
    const Free f = it->second;
    free_.erase(it);
#if STRATA_CUDA
    // A copy back out of it may still be queued.
    if (f.pending) STRATA_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(f.pending.get())));
#endif
    return f.ptr;
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

void PinnedPool::release(void* ptr, std::shared_ptr<void> pending) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = capacity_.find(ptr);
  STRATA_CHECK(it != capacity_.end(), "PinnedPool::release of a pointer it did not give out");
  free_.emplace(it->second, Free{ptr, std::move(pending)});
}

HostStage::~HostStage() {
  for (void* ptr : pinned_) pool_->release(ptr, copied_back_);
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
      if (CudaDevice* device = cuda_device_of(t)) {
        // After the compute stream's queued work (which may write t), and waited for: MPI reads
        // the buffer as soon as this returns.
        order_after(device->copy_stream(), device->stream());
        STRATA_CUDA_CHECK(cudaMemcpyAsync(host, t.raw(), t.nbytes(), cudaMemcpyDeviceToHost,
                                          device->copy_stream()));
        STRATA_CUDA_CHECK(cudaStreamSynchronize(device->copy_stream()));
      } else {
        STRATA_CUDA_CHECK(cudaMemcpy(host, t.raw(), t.nbytes(), cudaMemcpyDeviceToHost));
      }
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
      if (CudaDevice* device = cuda_device_of(out.tensor)) {
        // After the compute stream's work so far (the memory may have had an earlier user there),
        // and before its work from now on, which reads the result.
        order_after(device->copy_stream(), device->stream());
        STRATA_CUDA_CHECK(cudaMemcpyAsync(out.tensor.raw(), out.host, out.tensor.nbytes(),
                                          cudaMemcpyHostToDevice, device->copy_stream()));
        order_after(device->stream(), device->copy_stream());
        copied_back_ = event_after(device->copy_stream());
      } else {
        STRATA_CUDA_CHECK(
            cudaMemcpy(out.tensor.raw(), out.host, out.tensor.nbytes(), cudaMemcpyHostToDevice));
      }
#endif
    }
  }
  outputs_.clear();
}

}  // namespace strata

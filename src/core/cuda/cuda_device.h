// One GPU as a run uses it: the caching allocator its tensors come from, the compute stream every
// op on them runs on, and per-device state of the backend (the cuBLASLt handle, matmul plans,
// workspaces), made on first use. A CUDA tensor's storage remembers its CudaDevice, so an op
// reaches the stream through its arguments, never through a global.
//
// The compute stream is non-blocking: it does not order itself with the legacy default stream, so
// every copy to or from its tensors goes through it (Tensor::copy_from does).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <string_view>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/cuda_allocator.h"

namespace strata {

class Tensor;

class CudaDevice final : public Allocator {
 public:
  explicit CudaDevice(int index);
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  Device device() const override { return Device::cuda(index_); }
  void* allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void deallocate(void* ptr, size_t bytes) override { pool_.deallocate(ptr, bytes); }

  int index() const { return index_; }
  cudaStream_t stream() const { return stream_; }
  // A second non-blocking stream for copies between the host and this device that should not
  // sit in the compute stream's queue (MPI host staging); ordered against it by events.
  cudaStream_t copy_stream() const { return copy_stream_; }
  // Waits for everything queued on the compute stream.
  void synchronize();
  PoolStats memory_stats() const { return pool_.stats(); }
  void release_cached() { pool_.release_cached(); }

  // A new device tensor holding `host`'s values, copied without waiting: the values go through a
  // page-locked staging block (so the copy is asynchronous and `host` may change as soon as this
  // returns), which is reused only after an event says its copy has run.
  Tensor upload(const Tensor& host);
  // CPU copies of tensors on this device, read with one wait: each copied on the compute stream
  // into one page-locked block, then one synchronisation.
  std::vector<Tensor> download(const std::vector<const Tensor*>& tensors);

  // The backend's state of type T for this device, made as T(*this) on first use and kept until
  // the device goes.
  template <typename T>
  T& state() {
    std::lock_guard<std::mutex> lock(state_mutex_);
    std::shared_ptr<void>& slot = state_[std::type_index(typeid(T))];
    if (!slot) slot = std::make_shared<T>(*this);
    return *static_cast<T*>(slot.get());
  }

 private:
  int index_;
  CudaCachingAllocator pool_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t copy_stream_ = nullptr;
  PinnedHostAllocator pinned_;
  struct Staging {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;  // recorded after the copy out of `host`
  };
  std::vector<Staging> staging_;
  std::mutex staging_mutex_;
  void* download_block_ = nullptr;  // page-locked, download_bytes_ long; reused (under the mutex)
  size_t download_bytes_ = 0;
  std::mutex state_mutex_;
  std::unordered_map<std::type_index, std::shared_ptr<void>> state_;  // destroyed first
};

// The CudaDevice whose allocator made t's memory, or nullptr (a CPU tensor, a wrapped pointer, or
// memory from a bare CudaCachingAllocator).
CudaDevice* cuda_device_of(const Tensor& t);
// As above, but a CUDA tensor without one is an Error naming `op` and the argument: an op cannot
// know which stream to run on.
CudaDevice& cuda_device_for(std::string_view op, std::string_view arg, const Tensor& t);

}  // namespace strata

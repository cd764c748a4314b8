// Host memory for MPI operations. MPI works on host pointers: a CPU tensor's own memory, or for a
// CUDA tensor a pinned host copy (cudaMallocHost, so the copies run at full PCIe speed), filled
// from the device before the operation and copied back after it. This is the MPI backend's path
// for CUDA tensors (ranks sharing a GPU, or no NCCL); NCCL is the fast one.
//
// A tensor of a CudaDevice is copied on the device's copy stream, ordered by events against its
// compute stream: the copy in after the work queued there (it waits, since MPI reads the host
// buffer next), the copy back after the work queued by the time the operation finishes, and the
// compute stream's later work after the copy back (no host wait). The buffers go back to the
// pool with an event after the copy back and are reused only once it has run. Device memory from
// a bare allocator (no CudaDevice, so no stream) is copied with cudaMemcpy, which orders after
// the legacy default stream only.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/tensor.h"

namespace strata {

// Pinned host buffers kept for reuse (cudaMallocHost costs milliseconds). Buffers go back to the
// pool when an operation finishes and are freed when the pool goes (with its last user: the
// communicator and any handles still in flight share it).
class PinnedPool {
 public:
  PinnedPool() = default;
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // At least `bytes` of pinned memory: the smallest free buffer that fits, else a new one.
  void* acquire(size_t bytes);
  // `pending`, when given, holds a cudaEvent_t after the last copy that reads the buffer: the
  // pool waits for it before handing the buffer out again.
  void release(void* ptr, std::shared_ptr<void> pending = nullptr);

 private:
  struct Free {
    void* ptr;
    std::shared_ptr<void> pending;
  };
  std::mutex mutex_;
  std::multimap<size_t, Free> free_;  // capacity -> buffer
  std::map<void*, size_t> capacity_;  // every buffer the pool made
};

// The host side of one MPI operation.
class HostStage {
 public:
  explicit HostStage(std::shared_ptr<PinnedPool> pool) : pool_(std::move(pool)) {}
  ~HostStage();  // gives pinned buffers back to the pool
  HostStage(const HostStage&) = delete;
  HostStage& operator=(const HostStage&) = delete;

  // The host memory MPI should use for `t`. CPU tensors: the tensor's memory, or with
  // `private_copy` a scratch buffer (for outputs that alias an input). CUDA tensors: a pinned
  // buffer. `copy_in` fills the buffer from `t`; `copy_out` makes finish() copy it back into `t`.
  // The stage holds a reference to `t` until it is destroyed: a non-blocking send may still be
  // reading a CPU tensor's memory after its owner dropped it.
  void* host(const Tensor& t, bool copy_in, bool copy_out, bool private_copy = false);
  // Copies the outputs back into their tensors. Call once, after the MPI operation completed.
  void finish();

 private:
  struct Output {
    Tensor tensor;
    void* host;
  };
  std::shared_ptr<PinnedPool> pool_;
  std::vector<void*> pinned_;    // buffers from the pool, returned on destruction
  std::shared_ptr<void> copied_back_;  // an event after finish()'s copies on a copy stream
  std::vector<Tensor> scratch_;  // CPU scratch buffers
  std::vector<Output> outputs_;
  std::vector<Tensor> touched_;  // every tensor handed to host(), kept alive with the operation
};

}  // namespace strata

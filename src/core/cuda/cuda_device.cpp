#include "core/cuda/cuda_device.h"

#include <cstring>

#include "core/cuda/cuda_check.h"
#include "core/log.h"
#include "core/tensor.h"

namespace strata {

CudaDevice::CudaDevice(int index) : index_(index), pool_(index) {
  int previous = 0;
  STRATA_CUDA_CHECK(cudaGetDevice(&previous));
  STRATA_CUDA_CHECK(cudaSetDevice(index));
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  STRATA_CUDA_CHECK(cudaSetDevice(previous));
}

CudaDevice::~CudaDevice() {
  // The state (handles, workspaces) may still have work queued: finish it before freeing anything.
  cudaError_t rc = cudaStreamSynchronize(stream_);
  if (rc != cudaSuccess) log::error("cuda:", index_, ": synchronising the compute stream failed: ", detail::cuda_error_string(rc));
  rc = cudaStreamSynchronize(copy_stream_);
  if (rc != cudaSuccess) log::error("cuda:", index_, ": synchronising the copy stream failed: ", detail::cuda_error_string(rc));
  state_.clear();
  for (Staging& st : staging_) {
    cudaEventDestroy(st.copied);
    pinned_.deallocate(st.host, st.bytes);
  }
  if (download_block_) pinned_.deallocate(download_block_, download_bytes_);
  cudaStreamDestroy(copy_stream_);
  rc = cudaStreamDestroy(stream_);
  if (rc != cudaSuccess) log::error("cuda:", index_, ": cudaStreamDestroy failed: ", detail::cuda_error_string(rc));
}

void CudaDevice::synchronize() { STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Tensor CudaDevice::upload(const Tensor& host) {
  STRATA_CHECK(host.device().is_cpu() && host.is_contiguous(), "upload: needs a contiguous CPU tensor, got ",
               host.describe());
  Tensor out = Tensor::empty(host.shape(), host.dtype(), *this);
  const size_t bytes = host.nbytes();
  if (bytes == 0) return out;
  std::lock_guard<std::mutex> lock(staging_mutex_);
  Staging* slot = nullptr;
  for (Staging& st : staging_) {
    if (st.bytes < bytes) continue;
    const cudaError_t rc = cudaEventQuery(st.copied);
    if (rc == cudaErrorNotReady) continue;
    STRATA_CUDA_CHECK(rc);
    slot = &st;
    break;
  }
  if (!slot) {
    Staging st;
    st.bytes = bytes;
    st.host = pinned_.allocate(bytes);
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&st.copied, cudaEventDisableTiming));
    staging_.push_back(st);
    slot = &staging_.back();
  }
  std::memcpy(slot->host, host.raw(), bytes);
  STRATA_CUDA_CHECK(cudaMemcpyAsync(out.raw(), slot->host, bytes, cudaMemcpyHostToDevice, stream_));
  STRATA_CUDA_CHECK(cudaEventRecord(slot->copied, stream_));
  return out;
}

std::vector<Tensor> CudaDevice::download(const std::vector<const Tensor*>& tensors) {
  std::vector<size_t> at;
  size_t total = 0;
  for (const Tensor* t : tensors) {
    STRATA_CHECK(cuda_device_of(*t) == this && t->is_contiguous(), "download: needs contiguous tensors of ",
                 device().name(), ", got ", t->describe());
    at.push_back(total);
    total += (t->nbytes() + 15) / 16 * 16;
  }
  std::lock_guard<std::mutex> lock(staging_mutex_);
  if (total > download_bytes_) {
    if (download_block_) pinned_.deallocate(download_block_, download_bytes_);
    download_block_ = pinned_.allocate(total);
    download_bytes_ = total;
  }
  char* block = static_cast<char*>(download_block_);
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i]->nbytes() > 0)
      STRATA_CUDA_CHECK(cudaMemcpyAsync(block + at[i], tensors[i]->raw(), tensors[i]->nbytes(),
                                        cudaMemcpyDeviceToHost, stream_));
  synchronize();
  std::vector<Tensor> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    out.push_back(Tensor::empty(tensors[i]->shape(), tensors[i]->dtype()));
    if (tensors[i]->nbytes() > 0) std::memcpy(out.back().raw(), block + at[i], tensors[i]->nbytes());
  }
  return out;
}

CudaDevice* cuda_device_of(const Tensor& t) {
  if (!t.defined() || !t.device().is_cuda()) return nullptr;
  return dynamic_cast<CudaDevice*>(t.allocator());
}

CudaDevice& cuda_device_for(std::string_view op, std::string_view arg, const Tensor& t) {
  CudaDevice* device = cuda_device_of(t);
  STRATA_CHECK(device, op, ": argument '", arg, "' ", t.describe(),
               " was not allocated by a CudaDevice (a wrapped pointer or a bare allocator), so the op "
               "has no stream to run on; allocate CUDA tensors from the run's CudaDevice");
  return *device;
}

}  // namespace strata

#include "core/cuda/cuda_device.h"

#include "core/cuda/cuda_check.h"
#include "core/log.h"
#include "core/tensor.h"

namespace strata {

CudaDevice::CudaDevice(int index) : index_(index), pool_(index) {
  int previous = 0;
  STRATA_CUDA_CHECK(cudaGetDevice(&previous));
  STRATA_CUDA_CHECK(cudaSetDevice(index));
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  STRATA_CUDA_CHECK(cudaSetDevice(previous));
}

CudaDevice::~CudaDevice() {
  // The state (handles, workspaces) may still have work queued: finish it before freeing anything.
  cudaError_t rc = cudaStreamSynchronize(stream_);
  if (rc != cudaSuccess) log::error("cuda:", index_, ": synchronising the compute stream failed: ", detail::cuda_error_string(rc));
  state_.clear();
  rc = cudaStreamDestroy(stream_);
  if (rc != cudaSuccess) log::error("cuda:", index_, ": cudaStreamDestroy failed: ", detail::cuda_error_string(rc));
}

void CudaDevice::synchronize() { STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

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

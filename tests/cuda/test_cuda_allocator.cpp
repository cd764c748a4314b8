// CUDA memory: the caching device allocator and pinned host memory. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include "core/cuda/cuda_allocator.h"
#include "core/cuda/cuda_check.h"
#include "core/tensor.h"

using namespace strata;

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

TEST(CudaAllocator, TensorsRoundTripThroughTheDevice) {
  SKIP_WITHOUT_GPU();
  CudaCachingAllocator device(0);
  std::vector<float> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  Tensor host = Tensor::from_vector(values, {10, 100});
  Tensor gpu = Tensor::empty({10, 100}, DType::f32, device);
  EXPECT_TRUE(gpu.device().is_cuda());
  gpu.copy_from(host);
  Tensor back = gpu.to_cpu();
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(back.data<float>()[i], values[i]);
}

TEST(CudaAllocator, FreedBlocksAreReused) {
  SKIP_WITHOUT_GPU();
  CudaCachingAllocator device(0);
  void* first;
  {
    Tensor t = Tensor::zeros({1 << 20}, DType::f32, device);
    first = t.raw();
  }
  Tensor again = Tensor::empty({1 << 20}, DType::f32, device);
  EXPECT_EQ(again.raw(), first);
  EXPECT_EQ(device.stats().backing_allocations, 1u);
}

TEST(CudaAllocator, PinnedHostMemoryCopiesAsynchronously) {
  SKIP_WITHOUT_GPU();
  CudaCachingAllocator device(0);
  PinnedHostAllocator pinned;
  Tensor src = Tensor::empty({4096}, DType::f32, pinned);
  for (int i = 0; i < 4096; ++i) src.data<float>()[i] = static_cast<float>(i);
  Tensor gpu = Tensor::empty({4096}, DType::f32, device);
  Tensor dst = Tensor::zeros({4096}, DType::f32, pinned);
  cudaStream_t stream;
  STRATA_CUDA_CHECK(cudaStreamCreate(&stream));
  STRATA_CUDA_CHECK(cudaMemcpyAsync(gpu.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, stream));
  STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), gpu.raw(), gpu.nbytes(), cudaMemcpyDeviceToHost, stream));
  STRATA_CUDA_CHECK(cudaStreamSynchronize(stream));
  STRATA_CUDA_CHECK(cudaStreamDestroy(stream));
  for (int i = 0; i < 4096; ++i) EXPECT_EQ(dst.data<float>()[i], static_cast<float>(i));
}

TEST(CudaAllocator, OutOfRangeDeviceIsRejected) {
  SKIP_WITHOUT_GPU();
  const int past_last = cuda_device_count();
  EXPECT_THROW({ CudaCachingAllocator bad(past_last); }, Error);
}

TEST(CudaAllocator, NoGpuIsReportedAsZeroDevices) {
  // Holds on every machine: the count is a number, never an exception.
  EXPECT_GE(cuda_device_count(), 0);
}

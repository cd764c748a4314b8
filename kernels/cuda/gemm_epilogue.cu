// The GEMM epilogues as kernels of their own: one thread an element (bias_gelu, dgelu_multiply),
// one thread an output sum (strided_sums: a fixed order, so the same bits every run).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_epilogue.h"

namespace strata::cuda {
namespace {

constexpr unsigned kThreads = kStrideThreads;

// GPT-2's tanh form, as kernels/cpu/activations.cpp computes it.
__device__ __forceinline__ float gelu(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x), t = tanhf(u);
  return 0.5f * (1.0f + t) +
         0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

template <typename T>
__global__ void bias_gelu_kernel(T* c, int64_t rows, int64_t cols, const T* bias, bool apply_gelu,
                                 T* aux) {
  const int64_t n = rows * cols, stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    float v = to_float(c[i]);
    if (bias) v += to_float(bias[i % cols]);
    if (aux) aux[i] = from_float<T>(v);
    c[i] = from_float<T>(apply_gelu ? gelu(v) : v);
  }
}

template <typename T>
__global__ void dgelu_kernel(T* c, const T* aux, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride)
    c[i] = from_float<T>(to_float(c[i]) * gelu_grad(to_float(aux[i])));
}

template <typename T>
__global__ void strided_sums_kernel(const T* x, int64_t count, int64_t length, int64_t count_stride,
                                    int64_t length_stride, T* out) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += stride) {
    float s = 0.0f;
    for (int64_t q = 0; q < length; ++q) s += to_float(x[i * count_stride + q * length_stride]);
    out[i] = from_float<T>(s);
  }
}

}  // namespace

void bias_gelu(void* c, DType dtype, int64_t rows, int64_t cols, const void* bias, bool gelu,
               void* aux, cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_floating(dtype, "gemm epilogue", [&](auto tag) {
    using T = decltype(tag);
    launch("gemm_bias_gelu", &bias_gelu_kernel<T>, stride_grid(rows * cols), kThreads, 0, stream,
           static_cast<T*>(c), rows, cols, static_cast<const T*>(bias), gelu, static_cast<T*>(aux));
  });
}

void dgelu_multiply(void* c, const void* aux, DType dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(dtype, "gemm epilogue", [&](auto tag) {
    using T = decltype(tag);
    launch("gemm_dgelu", &dgelu_kernel<T>, stride_grid(n), kThreads, 0, stream, static_cast<T*>(c),
           static_cast<const T*>(aux), n);
  });
}

void strided_sums(const void* x, DType dtype, int64_t count, int64_t length, int64_t count_stride,
                  int64_t length_stride, void* out, cudaStream_t stream) {
  if (count == 0) return;
  with_floating(dtype, "gemm epilogue", [&](auto tag) {
    using T = decltype(tag);
    launch("gemm_strided_sums", &strided_sums_kernel<T>, stride_grid(count), kThreads, 0, stream,
           static_cast<const T*>(x), count, length, count_stride, length_stride,
           static_cast<T*>(out));
  });
}

}  // namespace strata::cuda

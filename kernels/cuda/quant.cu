// Weight-only int8 on the GPU: dequantisation into a scratch weight (before a cuBLASLt gemm, for
// prefill) and a fused GEMV for decode that reads the int8 rows and never writes W out.
//
// GEMV: y[i, j] = sum_c x[i, c] * W[j, c], W[j, c] = T(float(q[j, c]) * scale[j]). One warp per
// output feature j: lane l takes the row's chunks l, l + 32, ... (16 codes in one 16-byte load
// when every row starts 16-byte aligned, else 4 in one word), sums its products for every row i of
// x in f32 in column order, then the warp adds its lanes with shuffles in a fixed pattern, so the
// result does not depend on the order the threads run in.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/quant.h"

namespace strata::cuda {
namespace {

constexpr unsigned kGemvThreads = 256;  // 8 warps: 8 output features a block
constexpr int kRows = static_cast<int>(kInt8GemvMaxRows);

template <typename T>
__device__ __forceinline__ float dequantized(int8_t q, float scale) {
  return to_float(from_float<T>(static_cast<float>(q) * scale));
}

template <typename T>
__global__ void dequantize_kernel(const int8_t* q, int64_t row_bytes, const float* scale,
                                  int64_t rows, int64_t cols, T* w) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    w[i] = from_float<T>(static_cast<float>(q[r * row_bytes + c]) * scale[r]);
  }
}

// kChunk codes read in one load.
template <int kChunk>
struct alignas(kChunk) Codes {
  int8_t v[kChunk];
};

template <typename T, int kChunk>
__global__ void gemv_kernel(const T* x, int64_t m, int64_t cols, const int8_t* q, int64_t row_bytes,
                            const float* scale, int64_t n, T* y) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (j >= n) return;  // a whole warp leaves together: the shuffles below see all 32 lanes
  const int8_t* row = q + j * row_bytes;
  const float s = scale[j];
  float acc[kRows] = {};
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  for (int64_t k = lane; k < chunks; k += 32) {
    const Codes<kChunk> codes = *reinterpret_cast<const Codes<kChunk>*>(row + k * kChunk);
    const int64_t c0 = k * kChunk;
    for (int e = 0; e < kChunk; ++e) {
      const int64_t c = c0 + e;
      if (c >= cols) break;
      const float w = dequantized<T>(codes.v[e], s);
      for (int i = 0; i < kRows; ++i)
        if (i < m) acc[i] += w * to_float(x[i * cols + c]);
    }
  }
  for (int i = 0; i < kRows; ++i) {
    if (i >= m) break;
    const float total = warp_sum(acc[i]);
    if (lane == 0) y[i * n + j] = from_float<T>(total);
  }
}

}  // namespace

void dequantize_int8(const int8_t* q, int64_t row_bytes, const float* scale, int64_t rows,
                     int64_t cols, DType dtype, void* w, cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_floating(dtype, "dequantize_int8", [&](auto tag) {
    using T = decltype(tag);
    launch("dequantize_int8", &dequantize_kernel<T>, stride_grid(rows * cols), kStrideThreads, 0,
           stream, q, row_bytes, scale, rows, cols, static_cast<T*>(w));
  });
}

void gemv_int8(const void* x, DType dtype, int64_t m, int64_t cols, const int8_t* q,
               int64_t row_bytes, const float* scale, int64_t n, void* y, cudaStream_t stream) {
  STRATA_CHECK(m >= 0 && m <= kInt8GemvMaxRows, "gemv_int8: ", m,
               " rows of x; the GEMV takes at most ", kInt8GemvMaxRows);
  STRATA_CHECK(row_bytes % 4 == 0 && row_bytes >= cols, "gemv_int8: rows of ", row_bytes,
               " bytes cannot hold ", cols, " codes in whole words");
  STRATA_CHECK(reinterpret_cast<uintptr_t>(q) % 4 == 0, "gemv_int8: the codes at ",
               static_cast<const void*>(q), " are not 4-byte aligned (the kernel reads whole words)");
  if (m == 0 || n == 0) return;
  const unsigned blocks = blocks_for(n, kGemvThreads / 32);
  const bool wide = row_bytes % 16 == 0 && aligned16(q);
  with_floating(dtype, "gemv_int8", [&](auto tag) {
    using T = decltype(tag);
    auto kernel = wide ? &gemv_kernel<T, 16> : &gemv_kernel<T, 4>;
    launch("gemv_int8", kernel, blocks, kGemvThreads, 0, stream, static_cast<const T*>(x), m, cols,
           q, row_bytes, scale, n, static_cast<T*>(y));
  });
}

}  // namespace strata::cuda

// Launchers of the weight-only int8 kernels (kernels/cuda/quant.cu): raw device pointers, sizes
// and the stream. The op front end (kernels/ops_quant.cpp) checks the tensors first. A quantised
// weight W [n, cols] is n rows of row_bytes bytes (cols int8 codes, then zero padding; row_bytes
// a multiple of 4) and one f32 scale per row; W[r, c] = T(float(q[r, c]) * scale[r]) in the
// activation dtype T, exactly as the CPU's (kernels/cpu/quant.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// The most rows of x the fused GEMV takes (decode: a token per sequence of a small batch).
inline constexpr int64_t kInt8GemvMaxRows = 8;

// w: [rows, cols] f32, bf16 or f16 (`dtype`) = the dequantised weight.
void dequantize_int8(const int8_t* q, int64_t row_bytes, const float* scale, int64_t rows,
                     int64_t cols, DType dtype, void* w, cudaStream_t stream);

// y[m, n] = x[m, cols] W^T for m <= kInt8GemvMaxRows, x and y in `dtype` (f32, bf16, f16), f32
// accumulation; W is read once, as int8 (16-byte loads when row_bytes is a multiple of 16), and
// never written out dequantised.
void gemv_int8(const void* x, DType dtype, int64_t m, int64_t cols, const int8_t* q,
               int64_t row_bytes, const float* scale, int64_t n, void* y, cudaStream_t stream);

}  // namespace strata::cuda

// The epilogues of kernels/cuda/gemm.cpp as separate kernels (kernels/cuda/gemm_epilogue.cu), for
// the products cuBLASLt cannot fuse them into (a GELU aux whose leading dimension is not a
// multiple of 8, or no algorithm offered). f32, bf16 or f16 elements, computed in f32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// Over c [rows, cols]: v = c + bias[col] (bias may be null); aux (may be null) = v; c = gelu(v)
// with gelu, else v.
void bias_gelu(void* c, DType dtype, int64_t rows, int64_t cols, const void* bias, bool gelu,
               void* aux, cudaStream_t stream);
// c *= gelu'(aux), elementwise over n.
void dgelu_multiply(void* c, const void* aux, DType dtype, int64_t n, cudaStream_t stream);
// out[i] = sum over q < length of x[i * count_stride + q * length_stride], for i < count: each sum
// in f32 in the order of q (deterministic), rounded once to dtype.
void strided_sums(const void* x, DType dtype, int64_t count, int64_t length, int64_t count_stride,
                  int64_t length_stride, void* out, cudaStream_t stream);

}  // namespace strata::cuda

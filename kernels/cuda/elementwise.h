// Launchers of the elementwise kernels and reductions (kernels/cuda/elementwise.cu): raw device
// pointers, element counts and the stream to queue on. Elements are f32, bf16 or f16 (computed in
// f32); the op front ends (kernels/ops_elementwise.cpp) check the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// dst = src converted (round to nearest even when narrowing).
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);
// x[i] = value.
void fill(void* x, DType dtype, int64_t n, double value, cudaStream_t stream);
// out = a + b (out may alias a or b).
void add(const void* a, const void* b, void* out, DType dtype, int64_t n, cudaStream_t stream);
// x *= alpha.
void scale(void* x, DType dtype, int64_t n, double alpha, cudaStream_t stream);
// y += alpha * x: same dtype, or x bf16/f16 into an f32 y.
void axpy(double alpha, const void* x, DType x_dtype, void* y, DType y_dtype, int64_t n, cudaStream_t stream);
// *result (device memory, one f64) = sum of x, or of x squared, accumulated in f64 in an order
// fixed by n alone (two passes, no atomics), so every run gives the same bits. `scratch`: device
// memory for reduce_scratch(n) f64 partial sums.
int64_t reduce_scratch(int64_t n);
void reduce_sum(const void* x, DType dtype, int64_t n, bool squares, double* scratch, double* result,
                cudaStream_t stream);
// *acc += scale * sum of x (acc: one f64 in device memory), as reduce_sum.
void reduce_sum_into(const void* x, DType dtype, int64_t n, double scale, double* scratch, double* acc,
                     cudaStream_t stream);

}  // namespace strata::cuda

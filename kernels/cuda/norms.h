// Launchers of the LayerNorm and RMSNorm kernels (kernels/cuda/norms.cu): raw device pointers,
// sizes and the stream to queue on. x, y, dy, dx: [rows, d]; weight, bias, dweight, dbias: [d];
// mean, rstd: [rows] f32. Elements are f32, bf16 or f16, computed in f32. The op front end
// (kernels/ops_norms.cpp) checks the tensors first; the formulas are kernels/cpu/norms.h's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// y = (v - mean) * rstd * weight + bias over each row of v (bias may be null). v is x, or, when
// residual_in is not null, residual_out = x + residual_in rounded to the dtype (the fused residual
// add; residual_out may alias x or residual_in).
void layernorm_forward(const void* x, const void* residual_in, const void* weight, const void* bias,
                       DType dtype, int64_t rows, int64_t d, double eps, void* residual_out, void* y,
                       float* mean, float* rstd, cudaStream_t stream);
// y = v * rstd * weight, v as for layernorm_forward.
void rmsnorm_forward(const void* x, const void* residual_in, const void* weight, DType dtype, int64_t rows,
                     int64_t d, double eps, void* residual_out, void* y, float* rstd, cudaStream_t stream);

// f32 elements of device scratch the backward kernels need: per-block partial sums of the
// parameter gradients (two sets with a bias).
int64_t norm_backward_scratch(int64_t rows, int64_t d, bool with_bias);
// dx overwritten; dweight (and dbias, which may be null) accumulated. The parameter gradients are
// summed per block over a fixed run of rows, then the partials added in block order: the same bits
// on every run, no atomics. When dresidual is not null, dx = dresidual + the norm's dx, rounded
// as the plain backward followed by the add kernel round it (the fused residual add's backward;
// dx may alias dresidual).
void layernorm_backward(const void* dy, const void* dresidual, const void* x, const void* weight, const float* mean,
                        const float* rstd, DType dtype, int64_t rows, int64_t d, void* dx, void* dweight, void* dbias,
                        float* scratch, cudaStream_t stream);
void rmsnorm_backward(const void* dy, const void* dresidual, const void* x, const void* weight, const float* rstd,
                      DType dtype, int64_t rows, int64_t d, void* dx, void* dweight, float* scratch,
                      cudaStream_t stream);

}  // namespace strata::cuda

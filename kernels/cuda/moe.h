// Launchers of the mixture-of-experts routing kernels (kernels/cuda/moe.cu): raw device pointers,
// sizes and the stream. The op front end (kernels/ops_moe.cpp) checks the tensors first; the
// meaning of every argument is that of the CPU kernels (kernels/cpu/moe.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// scores: [rows, E] of `dtype` (f32, bf16, f16).
void moe_route(const void* scores, DType dtype, int64_t rows, int64_t E, int64_t k, double* probs,
               double* lse, int32_t* expert, double* gate, cudaStream_t stream);
void moe_capacity(const int32_t* expert, int64_t rows, int64_t k, int64_t E, int64_t capacity,
                  int64_t rows_per_expert, int32_t* row, int64_t* counts, cudaStream_t stream);
void moe_routing_losses(const double* probs, const double* lse, const int64_t* counts, int64_t rows,
                        int64_t E, int64_t k, double* losses, cudaStream_t stream);
void moe_routing_accumulate(const int64_t* counts, const double* losses, int64_t E, double* sum,
                            cudaStream_t stream);
// x, packed, out, y, dy, dout, din, add, dx: rows of d elements of `dtype`.
void moe_dispatch(const void* x, DType dtype, const int32_t* row, int64_t rows, int64_t k, int64_t d,
                  void* packed, cudaStream_t stream);
void moe_combine(const void* out, DType dtype, const int32_t* row, const double* gate, int64_t rows,
                 int64_t k, int64_t d, void* y, cudaStream_t stream);
void moe_combine_backward(const void* dy, const void* out, DType dtype, const int32_t* row,
                          const double* gate, int64_t rows, int64_t k, int64_t d, void* dout,
                          double* dgate, cudaStream_t stream);
void moe_dispatch_backward(const void* din, DType dtype, const int32_t* row, const void* add,
                           int64_t rows, int64_t k, int64_t d, void* dx, cudaStream_t stream);
// dscores: [rows, E] of `dtype`.
void moe_router_backward(const double* probs, const double* lse, const int32_t* expert,
                         const double* gate, const double* dgate, const int64_t* counts,
                         int64_t rows, int64_t E, int64_t k, double loss_scale, double aux_coef,
                         double z_coef, void* dscores, DType dtype, cudaStream_t stream);

}  // namespace strata::cuda

// Launcher of the top-k kernel (kernels/cuda/topk.cu): raw device pointers, sizes and the stream.
// The op front end (kernels/ops_topk.cpp) checks the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// x: [rows, n] f32, bf16 or f16 (`dtype`); values: [rows, k] (x's dtype, the elements' own bits);
// indices: [rows, k]. Largest first, equal values in ascending column order, NaN above every
// number, as the CPU's (kernels/cpu/topk.h). 1 <= k <= n.
void topk(const void* x, DType dtype, int64_t rows, int64_t n, int64_t k, void* values, int32_t* indices,
          cudaStream_t stream);

}  // namespace strata::cuda

// Launcher of the rotary position embedding kernel (kernels/cuda/rope.cu): raw device pointers,
// sizes and the stream to queue on. x, y: [batch, seq, heads, head_dim], head_dim even, f32, bf16
// or f16; y may alias x. The rotation is kernels/cpu/rope.h's; the op front end
// (kernels/ops_rope.cpp) checks the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// For the row at position p = position_offset + s and pair j < h = head_dim/2, a = p theta^(-2j/head_dim):
//   y_j = x_j cos a - x_{j+h} sin a,  y_{j+h} = x_{j+h} cos a + x_j sin a  (inverse: rotation by -a).
void rope(const void* x, DType dtype, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          int64_t position_offset, double theta, bool inverse, void* y, cudaStream_t stream);

}  // namespace strata::cuda

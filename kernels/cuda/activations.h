// Launchers of the activation kernels (kernels/cuda/activations.cu): raw device pointers, the
// element count and the stream to queue on. Elements are f32, bf16 or f16, computed in f32; the
// formulas are kernels/cpu/activations.h's and the op front end (kernels/ops_activations.cpp)
// checks the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// GELU, tanh form: y = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3); dx = dy gelu'(x).
void gelu_forward(const void* x, DType dtype, int64_t n, void* y, cudaStream_t stream);
void gelu_backward(const void* dy, const void* x, DType dtype, int64_t n, void* dx, cudaStream_t stream);
// SwiGLU: y = silu(gate) up; dgate = dy up s (1 + gate (1 - s)), dup = dy silu(gate), s = sigmoid(gate).
void swiglu_forward(const void* gate, const void* up, DType dtype, int64_t n, void* y, cudaStream_t stream);
void swiglu_backward(const void* dy, const void* gate, const void* up, DType dtype, int64_t n, void* dgate,
                     void* dup, cudaStream_t stream);

}  // namespace strata::cuda

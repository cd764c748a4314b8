// Elementwise activations on the CPU, forward and backward: GELU (tanh form) and SwiGLU.
// T = float, double, bf16 or f16 (the last two computed in f32, kernels/cpu/element.h).
#pragma once

#include <cstdint>

namespace strata::cpu {

// y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
template <typename T>
void gelu_forward(const T* x, int64_t n, T* y);
// dx = dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
template <typename T>
void gelu_backward(const T* dy, const T* x, int64_t n, T* dx);

// y = silu(gate) * up, silu(g) = g s, s = sigmoid(g) = 1 / (1 + exp(-g)).
template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* y);
// dgate = dy * up * s (1 + g (1 - s)), dup = dy * g s.
template <typename T>
void swiglu_backward(const T* dy, const T* gate, const T* up, int64_t n, T* dgate, T* dup);

}  // namespace strata::cpu

// LayerNorm and RMSNorm over the last dimension, forward and backward, on the CPU. Rows are every
// leading dimension flattened; all pointers are contiguous. T = float, double, bf16 or f16; the
// statistics (mean, rstd) are S = compute_t<T> (kernels/cpu/element.h): f64 for f64, else f32.
// Every sum is taken in f64 and each output rounded once.
#pragma once

#include <cstdint>

#include "kernels/cpu/element.h"

namespace strata::cpu {

// x, y: [rows, d]; weight: [d]; bias: [d] or nullptr; mean, rstd: [rows].
//   mean = sum_j x_j / d, var = sum_j (x_j - mean)^2 / d, rstd = 1 / sqrt(var + eps),
//   y_j = (x_j - mean) * rstd * weight_j + bias_j.
template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, int64_t rows, int64_t d,
                       double eps, T* y, compute_t<T>* mean, compute_t<T>* rstd);
// With xhat = (x - mean) * rstd and g = dy * weight:
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))   (overwritten),
//   dweight += sum_rows dy * xhat, dbias += sum_rows dy      (dbias may be nullptr).
// With dresidual (else nullptr), the fused residual add's backward: dx = dresidual + that dx, the
// norm's gradient rounded to T first, then the sum rounded as add() rounds it, so the result is
// that of the plain backward followed by add(). dx may alias dresidual (not dy or x).
template <typename T>
void layernorm_backward(const T* dy, const T* dresidual, const T* x, const T* weight,
                        const compute_t<T>* mean, const compute_t<T>* rstd, int64_t rows, int64_t d,
                        T* dx, T* dweight, T* dbias);

// rstd = 1 / sqrt(sum_j x_j^2 / d + eps), y_j = x_j * rstd * weight_j. rstd: [rows].
template <typename T>
void rmsnorm_forward(const T* x, const T* weight, int64_t rows, int64_t d, double eps, T* y,
                     compute_t<T>* rstd);
// With g = dy * weight: dx = rstd * g - x * rstd^3 * mean_j(g * x)   (overwritten),
//   dweight += sum_rows dy * x * rstd; dresidual (or nullptr) as for layernorm_backward.
template <typename T>
void rmsnorm_backward(const T* dy, const T* dresidual, const T* x, const T* weight,
                      const compute_t<T>* rstd, int64_t rows, int64_t d, T* dx, T* dweight);

}  // namespace strata::cpu

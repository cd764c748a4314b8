// Elementwise ops and whole-tensor reductions on the CPU. T = float, double, bf16 or f16; the
// 16-bit formats are widened to f32 for the arithmetic and rounded to nearest even on store.
#pragma once

#include <cstdint>

namespace strata::cpu {

// dst[i] = src[i] converted, rounded to nearest even when narrowing (once: f64 -> bf16/f16 does
// not round through f32's nearest value, which could create a false tie).
template <typename S, typename D>
void cast(const S* src, int64_t n, D* dst);
// x[i] = value (rounded once to T).
template <typename T>
void fill(T* x, int64_t n, double value);
// out = a + b; out may alias a or b.
template <typename T>
void add(const T* a, const T* b, int64_t n, T* out);
// x *= alpha.
template <typename T>
void scale(T* x, int64_t n, double alpha);
// y += alpha * x.
template <typename T>
void axpy(double alpha, const T* x, int64_t n, T* y);
// y (f32) += alpha * x (16-bit, widened): accumulating 16-bit gradients into f32 ones.
template <typename T>
void axpy_widen(double alpha, const T* x, int64_t n, float* y);
// sum_i x_i and sum_i x_i^2 in f64, over fixed chunks added in order (thread-count independent).
template <typename T>
double sum(const T* x, int64_t n);
template <typename T>
double sum_squares(const T* x, int64_t n);

}  // namespace strata::cpu

// Matrix products on the CPU through OpenBLAS. Raw pointers, row-major, contiguous operands.
#pragma once

#include <cstdint>

#include "kernels/cpu/element.h"

namespace strata::cpu {

// For each of `batch` products (operands laid out one after another):
//   c[m, n] = alpha * op(a)[m, k] @ op(b)[k, n] + beta * c,
// where a is stored [m, k] ([k, m] when trans_a) and b is stored [k, n] ([n, k] when trans_b).
// beta == 0 overwrites c (whatever it held, NaN included). T = float or double (BLAS directly),
// or bf16/f16: widened to f32, multiplied by sgemm, c rounded once (f32 accumulation, as GPUs do).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
          compute_t<T> alpha, const T* a, const T* b, compute_t<T> beta, T* c);

}  // namespace strata::cpu

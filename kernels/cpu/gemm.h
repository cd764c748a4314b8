// Matrix products on the CPU through OpenBLAS. Raw pointers, row-major, contiguous operands.
#pragma once

#include <cstdint>

namespace strata::cpu {

// For each of `batch` products (operands laid out one after another):
//   c[m, n] = alpha * op(a)[m, k] @ op(b)[k, n] + beta * c,
// where a is stored [m, k] ([k, m] when trans_a) and b is stored [k, n] ([n, k] when trans_b).
// beta == 0 overwrites c (whatever it held, NaN included). T = float or double.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n, int64_t k, T alpha,
          const T* a, const T* b, T beta, T* c);

}  // namespace strata::cpu

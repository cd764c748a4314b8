#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace strata::cpu {
namespace {

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, float alpha,
               const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c,
               blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k,
               double alpha, const double* a, blasint lda, const double* b, blasint ldb,
               double beta, double* c, blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n, int64_t k, T alpha,
          const T* a, const T* b, T beta, T* c) {
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    // An empty inner sum: c = beta * c. BLAS would refuse the zero leading dimension of a or b.
    for (int64_t i = 0; i < batch * m * n; ++i) c[i] = beta == T(0) ? T(0) : beta * c[i];
    return;
  }
  constexpr int64_t kMax = std::numeric_limits<blasint>::max();
  STRATA_CHECK(m <= kMax && n <= kMax && k <= kMax, "gemm: sizes m=", m, " n=", n, " k=", k,
               " exceed the BLAS integer range");
  // Leading dimensions of the row-major operands as stored (before the transpose).
  const auto lda = static_cast<blasint>(trans_a ? m : k);
  const auto ldb = static_cast<blasint>(trans_b ? k : n);
  const auto ldc = static_cast<blasint>(n);
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  // One BLAS call per batch entry: OpenBLAS threads inside each product, so the loop stays serial
  // (an OpenMP loop around it would oversubscribe the cores).
  for (int64_t i = 0; i < batch; ++i) {
    blas_gemm(ta, tb, static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k),
              alpha, a + i * m * k, lda, b + i * k * n, ldb, beta, c + i * m * n, ldc);
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, int64_t, float, const float*,
                          const float*, float, float*);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, int64_t, double, const double*,
                           const double*, double, double*);

}  // namespace strata::cpu

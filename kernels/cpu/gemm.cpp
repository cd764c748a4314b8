#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <limits>
#include <vector>

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

// f32 or f64 operands straight to BLAS.
template <typename T>
void blas_batched(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
                  T alpha, const T* a, const T* b, T beta, T* c) {
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

template <typename H>
std::vector<float> widened(const H* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = load(x[i]);
  return out;
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
          compute_t<T> alpha, const T* a, const T* b, compute_t<T> beta, T* c) {
  if (batch == 0 || m == 0 || n == 0) return;
  if constexpr (sizeof(T) == 2) {
    // bf16/f16 are storage formats: the product runs in f32 and c is rounded once at the end.
    const std::vector<float> a32 = widened(a, batch * m * k), b32 = widened(b, batch * k * n);
    std::vector<float> c32 = beta == 0.0f ? std::vector<float>(static_cast<size_t>(batch * m * n))
                                          : widened(c, batch * m * n);
    blas_batched(trans_a, trans_b, batch, m, n, k, alpha, a32.data(), b32.data(), beta, c32.data());
    for (int64_t i = 0; i < batch * m * n; ++i) c[i] = store<T>(c32[static_cast<size_t>(i)]);
  } else {
    blas_batched(trans_a, trans_b, batch, m, n, k, alpha, a, b, beta, c);
  }
}

#define STRATA_INSTANTIATE_GEMM(T)                                                              \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, int64_t, compute_t<T>, const T*, \
                        const T*, compute_t<T>, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_GEMM)
#undef STRATA_INSTANTIATE_GEMM

}  // namespace strata::cpu

#include "kernels/cpu/norms.h"

#include <algorithm>
#include <cmath>

namespace strata::cpu {
namespace {

// dparam[j] += sum_r term(r, j). Parallel over blocks of columns with the rows summed in order
// inside each block, so the parameter gradient is the same whatever the thread count (a reduction
// over per-thread partials would depend on it) and no two threads write one element.
template <typename T, typename Term>
void accumulate_over_rows(int64_t rows, int64_t d, T* dparam, Term term) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += term(r, j);
    for (int64_t j = j0; j < j1; ++j) dparam[j] = narrow<T>(widen(dparam[j]) + acc[j - j0]);
  }
}

// dx_j of one row: the norm's gradient g_j (f64) rounded to T, plus dresidual_j when there is one,
// added in compute_t<T> and rounded as add() does (elementwise.cpp), which the fused op matches.
template <typename T>
T with_residual(double g, const T* dresidual, int64_t i) {
  const T norm_grad = narrow<T>(g);
  return dresidual ? store<T>(load(norm_grad) + load(dresidual[i])) : norm_grad;
}

}  // namespace

template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, int64_t rows, int64_t d,
                       double eps, T* y, compute_t<T>* mean, compute_t<T>* rstd) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    // Two passes (mean, then squared deviations): no cancellation of E[x^2] - E[x]^2.
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += widen(xr[j]);
    const double mu = s / static_cast<double>(d);
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += (widen(xr[j]) - mu) * (widen(xr[j]) - mu);
    const double rs = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t j = 0; j < d; ++j) {
      const double b = bias ? widen(bias[j]) : 0.0;
      yr[j] = narrow<T>((widen(xr[j]) - mu) * rs * widen(weight[j]) + b);
    }
    mean[r] = static_cast<compute_t<T>>(mu);
    rstd[r] = static_cast<compute_t<T>>(rs);
  }
}

template <typename T>
void layernorm_backward(const T* dy, const T* dresidual, const T* x, const T* weight,
                        const compute_t<T>* mean, const compute_t<T>* rstd, int64_t rows, int64_t d,
                        T* dx, T* dweight, T* dbias) {
  const double inv_d = 1.0 / static_cast<double>(d);
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * d;
    const T* xr = x + r * d;
    const double mu = mean[r], rs = rstd[r];
    double g_mean = 0, gx_mean = 0;  // mean_j(g), mean_j(g * xhat)
    for (int64_t j = 0; j < d; ++j) {
      const double g = widen(dyr[j]) * widen(weight[j]);
      g_mean += g;
      gx_mean += g * (widen(xr[j]) - mu) * rs;
    }
    g_mean *= inv_d;
    gx_mean *= inv_d;
    for (int64_t j = 0; j < d; ++j) {
      const double g = widen(dyr[j]) * widen(weight[j]);
      const double xhat = (widen(xr[j]) - mu) * rs;
      dx[r * d + j] = with_residual(rs * (g - g_mean - xhat * gx_mean), dresidual, r * d + j);
    }
  }
  accumulate_over_rows(rows, d, dweight, [&](int64_t r, int64_t j) {
    return widen(dy[r * d + j]) * (widen(x[r * d + j]) - mean[r]) * rstd[r];
  });
  if (dbias)
    accumulate_over_rows(rows, d, dbias,
                         [&](int64_t r, int64_t j) { return widen(dy[r * d + j]); });
}

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, int64_t rows, int64_t d, double eps, T* y,
                     compute_t<T>* rstd) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += widen(xr[j]) * widen(xr[j]);
    const double rs = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = narrow<T>(widen(xr[j]) * rs * widen(weight[j]));
    rstd[r] = static_cast<compute_t<T>>(rs);
  }
}

template <typename T>
void rmsnorm_backward(const T* dy, const T* dresidual, const T* x, const T* weight,
                      const compute_t<T>* rstd, int64_t rows, int64_t d, T* dx, T* dweight) {
  const double inv_d = 1.0 / static_cast<double>(d);
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * d;
    const T* xr = x + r * d;
    const double rs = rstd[r];
    double gx_mean = 0;  // mean_j(g * x)
    for (int64_t j = 0; j < d; ++j) gx_mean += widen(dyr[j]) * widen(weight[j]) * widen(xr[j]);
    gx_mean *= inv_d;
    const double rs3 = rs * rs * rs;
    for (int64_t j = 0; j < d; ++j)
      dx[r * d + j] =
          with_residual(rs * widen(dyr[j]) * widen(weight[j]) - widen(xr[j]) * rs3 * gx_mean,
                        dresidual, r * d + j);
  }
  accumulate_over_rows(rows, d, dweight, [&](int64_t r, int64_t j) {
    return widen(dy[r * d + j]) * widen(x[r * d + j]) * rstd[r];
  });
}

#define STRATA_INSTANTIATE_NORMS(T)                                                                \
  template void layernorm_forward<T>(const T*, const T*, const T*, int64_t, int64_t, double, T*,   \
                                     compute_t<T>*, compute_t<T>*);                                \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const compute_t<T>*, \
                                      const compute_t<T>*, int64_t, int64_t, T*, T*, T*);          \
  template void rmsnorm_forward<T>(const T*, const T*, int64_t, int64_t, double, T*,               \
                                   compute_t<T>*);                                                 \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, const compute_t<T>*,   \
                                    int64_t, int64_t, T*, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_NORMS)
#undef STRATA_INSTANTIATE_NORMS

}  // namespace strata::cpu

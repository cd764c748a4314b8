#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/element.h"

namespace strata::cpu {
namespace {

// One rounding from the exact source value (f64 holds every other format exactly).
template <typename D, typename S>
D convert(S x) {
  return narrow<D>(widen(x));
}

// Inside a chunk, element i goes to partial sum i % kLanes and the lanes are added in order at the
// end: independent accumulators let the loop vectorize and pipeline (one running sum is bound by
// the latency of each f64 add), and the order of additions stays fixed whatever the vector width.
constexpr int64_t kLanes = 8;
static_assert(kReduceChunk % kLanes == 0);

template <typename T, typename Term>
double chunked_sum(const T* x, int64_t n, Term term) {
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kReduceChunk, end = std::min(n, begin + kReduceChunk);
    const int64_t body = begin + (end - begin) / kLanes * kLanes;
    double lane[kLanes] = {};
    for (int64_t i = begin; i < body; i += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) lane[l] += term(static_cast<double>(load(x[i + l])));
    for (int64_t i = body; i < end; ++i) lane[i - body] += term(static_cast<double>(load(x[i])));
    double s = 0;
    for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
    partial[static_cast<size_t>(c)] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

template <typename S, typename D>
void cast(const S* src, int64_t n, D* dst) {
  if constexpr (std::is_same_v<S, D>) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(S));
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = convert<D>(src[i]);
  }
}

template <typename T>
void fill(T* x, int64_t n, double value) {
  const T v = narrow<T>(value);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] = v;
}

template <typename T>
void add(const T* a, const T* b, int64_t n, T* out) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = store<T>(load(a[i]) + load(b[i]));
}

template <typename T>
void scale(T* x, int64_t n, double alpha) {
  const auto a = static_cast<compute_t<T>>(alpha);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] = store<T>(a * load(x[i]));
}

template <typename T>
void axpy(double alpha, const T* x, int64_t n, T* y) {
  const auto a = static_cast<compute_t<T>>(alpha);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = store<T>(load(y[i]) + a * load(x[i]));
}

template <typename T>
void axpy_widen(double alpha, const T* x, int64_t n, float* y) {
  const auto a = static_cast<float>(alpha);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += a * load(x[i]);
}
template void axpy_widen<bf16>(double, const bf16*, int64_t, float*);
template void axpy_widen<f16>(double, const f16*, int64_t, float*);

template <typename T>
double sum(const T* x, int64_t n) {
  return chunked_sum(x, n, [](double v) { return v; });
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  return chunked_sum(x, n, [](double v) { return v * v; });
}

#define STRATA_INSTANTIATE_CAST(S)                           \
  template void cast<S, float>(const S*, int64_t, float*);   \
  template void cast<S, double>(const S*, int64_t, double*); \
  template void cast<S, bf16>(const S*, int64_t, bf16*);     \
  template void cast<S, f16>(const S*, int64_t, f16*);
#define STRATA_INSTANTIATE_ELEMENTWISE(T)                \
  STRATA_INSTANTIATE_CAST(T)                             \
  template void fill<T>(T*, int64_t, double);            \
  template void add<T>(const T*, const T*, int64_t, T*); \
  template void scale<T>(T*, int64_t, double);           \
  template void axpy<T>(double, const T*, int64_t, T*);  \
  template double sum<T>(const T*, int64_t);             \
  template double sum_squares<T>(const T*, int64_t);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_ELEMENTWISE)
#undef STRATA_INSTANTIATE_ELEMENTWISE
#undef STRATA_INSTANTIATE_CAST

}  // namespace strata::cpu

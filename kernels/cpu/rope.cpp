#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/element.h"

namespace strata::cpu {

template <typename T>
void rope(const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          int64_t position_offset, double theta, bool inverse, T* y) {
  const int64_t half = head_dim / 2;
  // cos and sin of every (position, pair) once, in f64: [seq, half] each.
  std::vector<double> cos_a(static_cast<size_t>(seq * half)), sin_a(cos_a.size());
  for (int64_t s = 0; s < seq; ++s) {
    const double pos = static_cast<double>(position_offset + s);
    for (int64_t j = 0; j < half; ++j) {
      const double inv_freq =
          std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(head_dim));
      const double a = pos * inv_freq;
      cos_a[static_cast<size_t>(s * half + j)] = std::cos(a);
      sin_a[static_cast<size_t>(s * half + j)] = inverse ? -std::sin(a) : std::sin(a);
    }
  }
#pragma omp parallel for schedule(static) if (batch * seq * heads * head_dim >= kParallelMin)
  for (int64_t row = 0; row < batch * seq; ++row) {
    const int64_t s = row % seq;
    const double* c = cos_a.data() + s * half;
    const double* sn = sin_a.data() + s * half;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (row * heads + h) * head_dim;
      for (int64_t j = 0; j < half; ++j) {
        // Both inputs are read before either output is written, so y may alias x.
        const double lo = widen(x[base + j]), hi = widen(x[base + j + half]);
        y[base + j] = narrow<T>(lo * c[j] - hi * sn[j]);
        y[base + j + half] = narrow<T>(hi * c[j] + lo * sn[j]);
      }
    }
  }
}

#define STRATA_INSTANTIATE_ROPE(T) \
  template void rope<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, double, bool, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_ROPE)
#undef STRATA_INSTANTIATE_ROPE

}  // namespace strata::cpu

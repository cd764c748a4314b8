#include "kernels/cpu/topk.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/element.h"

namespace strata::cpu {

template <typename T>
void topk(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int32_t* indices) {
#pragma omp parallel if (rows * n >= kParallelMin)
  {
    std::vector<int32_t> order(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * n;
      // Strict weak order "comes first": NaN above numbers, larger above smaller, then lower index.
      auto before = [xr](int32_t a, int32_t b) {
        const auto va = load(xr[a]), vb = load(xr[b]);
        const bool nan_a = std::isnan(va), nan_b = std::isnan(vb);
        if (nan_a != nan_b) return nan_a;
        if (!nan_a && va != vb) return va > vb;
        return a < b;
      };
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t c = order[static_cast<size_t>(j)];
        values[r * k + j] = xr[c];
        indices[r * k + j] = c;
      }
    }
  }
}

#define STRATA_INSTANTIATE_TOPK(T) \
  template void topk<T>(const T*, int64_t, int64_t, int64_t, T*, int32_t*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_TOPK)
#undef STRATA_INSTANTIATE_TOPK

}  // namespace strata::cpu

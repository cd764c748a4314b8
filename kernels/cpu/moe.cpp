#include "kernels/cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/element.h"

namespace strata::cpu {
template <typename T>
void moe_route(const T* scores, int64_t rows, int64_t E, int64_t k, double* probs, double* lse,
               int32_t* expert, double* gate) {
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = scores + r * E;
    double* p = probs + r * E;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < E; ++e) m = std::max(m, widen(s[e]));
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(widen(s[e]) - m);
    lse[r] = m + std::log(sum);
    for (int64_t e = 0; e < E; ++e) p[e] = std::exp(widen(s[e]) - lse[r]);
    // The k most probable: larger first, NaN above numbers, ties to the lower index.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [p](int32_t a, int32_t b) {
      const bool nan_a = std::isnan(p[a]), nan_b = std::isnan(p[b]);
      if (nan_a != nan_b) return nan_a;
      if (!nan_a && p[a] != p[b]) return p[a] > p[b];
      return a < b;
    });
    double total = 0;
    for (int64_t j = 0; j < k; ++j) total += p[order[static_cast<size_t>(j)]];
    if (k == 1) total = 1.0;  // Switch: the gate is p itself
    for (int64_t j = 0; j < k; ++j) {
      expert[r * k + j] = order[static_cast<size_t>(j)];
      gate[r * k + j] = p[order[static_cast<size_t>(j)]] / total;
    }
  }
}

void moe_capacity(const int32_t* expert, int64_t rows, int64_t k, int64_t E, int64_t capacity,
                  int64_t rows_per_expert, int32_t* row, int64_t* counts) {
  std::fill(counts, counts + 2 * E, 0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t c = r * k + j, e = expert[c];
      const int64_t place = counts[e]++;
      row[c] = place < capacity ? static_cast<int32_t>(place) : -1;
    }
  std::vector<int64_t> start(static_cast<size_t>(E), 0);
  for (int64_t e = 0; e < E; ++e) {
    counts[E + e] = std::min(counts[e], capacity);
    if (e > 0)
      start[static_cast<size_t>(e)] = rows_per_expert > 0 ? e * rows_per_expert
                                                          : start[static_cast<size_t>(e - 1)] + counts[E + e - 1];
  }
  for (int64_t c = 0; c < rows * k; ++c)
    if (row[c] >= 0) row[c] += static_cast<int32_t>(start[static_cast<size_t>(expert[c])]);
}

void moe_routing_losses(const double* probs, const double* lse, const int64_t* counts, int64_t rows,
                        int64_t E, int64_t k, double* losses) {
  losses[0] = losses[1] = 0;
  for (int64_t e = 0; e < E; ++e) {
    double mean_p = 0;
    for (int64_t r = 0; r < rows; ++r) mean_p += probs[r * E + e];
    mean_p /= static_cast<double>(rows);
    const double f = static_cast<double>(counts[e]) / static_cast<double>(rows * k);
    losses[0] += static_cast<double>(E) * f * mean_p;
  }
  for (int64_t r = 0; r < rows; ++r) losses[1] += lse[r] * lse[r];
  losses[1] /= static_cast<double>(rows);
}

void moe_routing_accumulate(const int64_t* counts, const double* losses, int64_t E, double* sum) {
  for (int64_t i = 0; i < 2 * E; ++i) sum[i] += static_cast<double>(counts[i]);
  sum[2 * E] += losses[0];
  sum[2 * E + 1] += losses[1];
}

template <typename T>
void moe_dispatch(const T* x, const int32_t* row, int64_t rows, int64_t k, int64_t d, T* packed) {
  for (int64_t c = 0; c < rows * k; ++c)
    if (row[c] >= 0) std::copy(x + (c / k) * d, x + (c / k + 1) * d, packed + row[c] * d);
}

namespace {

// y[r] = sum over r's kept choices c of w(c) rows_in[row[c]] (+ add[r]), w = gate or 1.
template <typename T>
void gather_sum(const T* rows_in, const int32_t* row, const double* gate, const T* add, int64_t rows,
                int64_t k, int64_t d, T* y) {
  std::vector<double> acc(static_cast<size_t>(d));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = r * k + j;
      if (row[c] < 0) continue;
      const T* o = rows_in + row[c] * d;
      for (int64_t i = 0; i < d; ++i)
        acc[static_cast<size_t>(i)] += (gate ? gate[c] * widen(o[i]) : widen(o[i]));
    }
    for (int64_t i = 0; i < d; ++i)
      y[r * d + i] = narrow<T>(acc[static_cast<size_t>(i)] + (add ? widen(add[r * d + i]) : 0.0));
  }
}

}  // namespace

template <typename T>
void moe_combine(const T* out, const int32_t* row, const double* gate, int64_t rows, int64_t k,
                 int64_t d, T* y) {
  gather_sum<T>(out, row, gate, nullptr, rows, k, d, y);
}

template <typename T>
void moe_combine_backward(const T* dy, const T* out, const int32_t* row, const double* gate,
                          int64_t rows, int64_t k, int64_t d, T* dout, double* dgate) {
  for (int64_t c = 0; c < rows * k; ++c) {
    dgate[c] = 0;
    if (row[c] < 0) continue;
    const int64_t dest = row[c];
    const T* dyr = dy + (c / k) * d;
    const T* o = out + dest * d;
    double dot = 0;
    for (int64_t i = 0; i < d; ++i) {
      dout[dest * d + i] = narrow<T>(gate[c] * widen(dyr[i]));
      dot += widen(dyr[i]) * widen(o[i]);
    }
    dgate[c] = dot;
  }
}

template <typename T>
void moe_dispatch_backward(const T* din, const int32_t* row, const T* add, int64_t rows, int64_t k,
                           int64_t d, T* dx) {
  gather_sum<T>(din, row, nullptr, add, rows, k, d, dx);
}

template <typename T>
void moe_router_backward(const double* probs, const double* lse, const int32_t* expert,
                         const double* gate, const double* dgate, const int64_t* counts,
                         int64_t rows, int64_t E, int64_t k, double loss_scale, double aux_coef,
                         double z_coef, T* dscores) {
  std::vector<double> dp(static_cast<size_t>(E));
  for (int64_t r = 0; r < rows; ++r) {
    const double* p = probs + r * E;
    std::fill(dp.begin(), dp.end(), 0.0);
    // Gates -> probabilities: w_j = p_j / S over the token's chosen p, so
    // dp_i = (dgate_i - sum_j dgate_j w_j) / S for each chosen i; with k = 1, w = p: dp = dgate.
    if (k == 1) {
      dp[static_cast<size_t>(expert[r])] += dgate[r];
    } else {
      double chosen_p = 0, weighted = 0;
      for (int64_t j = 0; j < k; ++j) {
        chosen_p += p[expert[r * k + j]];
        weighted += dgate[r * k + j] * gate[r * k + j];
      }
      for (int64_t j = 0; j < k; ++j)
        dp[static_cast<size_t>(expert[r * k + j])] += (dgate[r * k + j] - weighted) / chosen_p;
    }
    // Load balancing adds coef E f_e / rows to every dp[r, e].
    if (aux_coef > 0)
      for (int64_t e = 0; e < E; ++e)
        dp[static_cast<size_t>(e)] +=
            loss_scale * aux_coef * static_cast<double>(E) *
            (static_cast<double>(counts[e]) / static_cast<double>(rows * k)) /
            static_cast<double>(rows);
    // Softmax: dscore = p (dp - sum_e p_e dp_e); the z-loss adds coef 2 lse p / rows.
    double inner = 0;
    for (int64_t e = 0; e < E; ++e) inner += p[e] * dp[static_cast<size_t>(e)];
    const double z = loss_scale * z_coef * 2.0 * lse[r] / static_cast<double>(rows);
    for (int64_t e = 0; e < E; ++e)
      dscores[r * E + e] = narrow<T>(p[e] * (dp[static_cast<size_t>(e)] - inner) + z * p[e]);
  }
}

#define STRATA_INSTANTIATE_MOE(T)                                                                  \
  template void moe_route<T>(const T*, int64_t, int64_t, int64_t, double*, double*, int32_t*,      \
                             double*);                                                             \
  template void moe_dispatch<T>(const T*, const int32_t*, int64_t, int64_t, int64_t, T*);          \
  template void moe_combine<T>(const T*, const int32_t*, const double*, int64_t, int64_t, int64_t, \
                               T*);                                                                \
  template void moe_combine_backward<T>(const T*, const T*, const int32_t*, const double*,         \
                                        int64_t, int64_t, int64_t, T*, double*);                   \
  template void moe_dispatch_backward<T>(const T*, const int32_t*, const T*, int64_t, int64_t,     \
                                         int64_t, T*);                                             \
  template void moe_router_backward<T>(const double*, const double*, const int32_t*,               \
                                       const double*, const double*, const int64_t*, int64_t,      \
                                       int64_t, int64_t, double, double, double, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_MOE)
#undef STRATA_INSTANTIATE_MOE

}  // namespace strata::cpu

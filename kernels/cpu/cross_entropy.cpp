#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/vector_math.h"

namespace strata::cpu {
namespace {

template <typename C>
struct RowStats {
  C max;      // max_j logit_j, -inf for no columns
  C sum_exp;  // sum_j exp(logit_j - max), in [1, n] for n > 0 columns
};

// Elements of a row are spread over this many partial maxima and sums (element j goes to lane
// j % kLanes), combined in lane order at the end: the loops vectorize, and the result depends only
// on the row, not on the vector width or the thread count.
constexpr int64_t kLanes = 16;

// Two passes: the max first, so every exp is <= 1 and the sum cannot overflow. exp_c is exp_f32
// for f32 and the 16-bit formats (within 1 ulp, kernels/cpu/vector_math.h), libm for f64.
template <typename T>
RowStats<compute_t<T>> row_stats(const T* logits, int64_t n) {
  using C = compute_t<T>;
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();
  const int64_t body = n / kLanes * kLanes;
  C lane[kLanes];
  std::fill_n(lane, kLanes, neg_inf);
  for (int64_t j = 0; j < body; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], load(logits[j + l]));
  for (int64_t j = body; j < n; ++j) lane[j - body] = std::max(lane[j - body], load(logits[j]));
  C max = neg_inf;
  for (int64_t l = 0; l < kLanes; ++l) max = std::max(max, lane[l]);

  std::fill_n(lane, kLanes, C(0));
  for (int64_t j = 0; j < body; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] += exp_c(load(logits[j + l]) - max);
  for (int64_t j = body; j < n; ++j) lane[j - body] += exp_c(load(logits[j]) - max);
  C sum_exp = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum_exp += lane[l];
  return {max, sum_exp};
}

// The target's column within the shard [vocab_start, vocab_start + vocab_shard), or -1 when the
// target is elsewhere or ignored (negative).
template <typename I>
int64_t target_column(I target, int64_t vocab_start, int64_t vocab_shard) {
  const int64_t t = static_cast<int64_t>(target);
  return t >= vocab_start && t < vocab_start + vocab_shard ? t - vocab_start : -1;
}

}  // namespace

template <typename T, typename I>
void cross_entropy_stats(const T* logits, const I* targets, int64_t rows, int64_t vocab_shard,
                         int64_t vocab_start, compute_t<T>* max, compute_t<T>* sum_exp,
                         compute_t<T>* target_logit) {
#pragma omp parallel for schedule(static) if (rows * vocab_shard >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab_shard;
    const RowStats<compute_t<T>> stats = row_stats(row, vocab_shard);
    max[r] = stats.max;
    sum_exp[r] = stats.sum_exp;
    const int64_t column = target_column(targets[r], vocab_start, vocab_shard);
    target_logit[r] = column >= 0 ? load(row[column]) : compute_t<T>(0);
  }
}

// Rescaling each shard's sum to the common max M: sum_j exp(x_j - M) = sum_exp_s exp(max_s - M).
// A shard with no columns (max_s = -inf) adds nothing; no columns at all gives lse = -inf.
template <typename C, typename I>
void cross_entropy_combine(const C* max, const C* sum_exp, const C* target_logit, const I* targets,
                           int64_t shards, int64_t rows, C* loss, C* lse) {
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();
#pragma omp parallel for schedule(static) if (rows * shards >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    C top = neg_inf;
    for (int64_t s = 0; s < shards; ++s) top = std::max(top, max[s * rows + r]);
    C total = 0, target = 0;
    for (int64_t s = 0; s < shards; ++s) {
      if (max[s * rows + r] > neg_inf)
        total += sum_exp[s * rows + r] * std::exp(max[s * rows + r] - top);
      target += target_logit[s * rows + r];
    }
    lse[r] = total > C(0) ? top + std::log(total) : neg_inf;
    loss[r] = targets[r] < 0 ? C(0) : lse[r] - target;
  }
}

template <typename T, typename I>
int64_t cross_entropy_forward(const T* logits, const I* targets, int64_t rows, int64_t vocab,
                              compute_t<T>* loss, compute_t<T>* lse) {
  using C = compute_t<T>;
  int64_t first_bad = rows;
#pragma omp parallel for schedule(static) reduction(min \
                                                    : first_bad) if (rows * vocab >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab;
    const RowStats<C> stats = row_stats(row, vocab);
    lse[r] = stats.max + std::log(stats.sum_exp);
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t >= vocab) {
      first_bad = std::min(first_bad, r);
      loss[r] = std::numeric_limits<C>::quiet_NaN();
    } else {
      loss[r] = t < 0 ? C(0) : lse[r] - load(row[t]);
    }
  }
  return first_bad == rows ? -1 : first_bad;
}

template <typename T, typename I>
void cross_entropy_backward(const T* logits, const I* targets, int64_t rows, int64_t vocab_shard,
                            int64_t vocab_start, const compute_t<T>* lse, const compute_t<T>* dloss,
                            T* dlogits) {
  using C = compute_t<T>;
#pragma omp parallel for schedule(static) if (rows * vocab_shard >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab_shard;
    T* grad = dlogits + r * vocab_shard;
    if (targets[r] < 0) {
      std::fill_n(grad, vocab_shard, store<T>(C(0)));
      continue;
    }
    const C lse_r = lse[r], dloss_r = dloss[r];
    // The target's column is redone with the one-hot term, (p - 1) dloss (not p dloss - dloss);
    // its logit is read first, so dlogits may be the logits' own buffer.
    const int64_t column = target_column(targets[r], vocab_start, vocab_shard);
    const C target_logit = column >= 0 ? load(row[column]) : C(0);
    for (int64_t j = 0; j < vocab_shard; ++j)
      grad[j] = store<T>(exp_c(load(row[j]) - lse_r) * dloss_r);
    if (column >= 0) grad[column] = store<T>((exp_c(target_logit - lse_r) - C(1)) * dloss_r);
  }
}

// The macro arguments are types, which cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define STRATA_INSTANTIATE_CROSS_ENTROPY(T, I)                                              \
  template void cross_entropy_stats<T, I>(const T*, const I*, int64_t, int64_t, int64_t,    \
                                          compute_t<T>*, compute_t<T>*, compute_t<T>*);     \
  template int64_t cross_entropy_forward<T, I>(const T*, const I*, int64_t, int64_t,        \
                                               compute_t<T>*, compute_t<T>*);               \
  template void cross_entropy_backward<T, I>(const T*, const I*, int64_t, int64_t, int64_t, \
                                             const compute_t<T>*, const compute_t<T>*, T*);
#define STRATA_INSTANTIATE_CROSS_ENTROPY_BOTH_INDICES(T) \
  STRATA_INSTANTIATE_CROSS_ENTROPY(T, int32_t)           \
  STRATA_INSTANTIATE_CROSS_ENTROPY(T, int64_t)
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_CROSS_ENTROPY_BOTH_INDICES)
template void cross_entropy_combine<float, int32_t>(const float*, const float*, const float*,
                                                    const int32_t*, int64_t, int64_t, float*,
                                                    float*);
template void cross_entropy_combine<float, int64_t>(const float*, const float*, const float*,
                                                    const int64_t*, int64_t, int64_t, float*,
                                                    float*);
template void cross_entropy_combine<double, int32_t>(const double*, const double*, const double*,
                                                     const int32_t*, int64_t, int64_t, double*,
                                                     double*);
template void cross_entropy_combine<double, int64_t>(const double*, const double*, const double*,
                                                     const int64_t*, int64_t, int64_t, double*,
                                                     double*);
#undef STRATA_INSTANTIATE_CROSS_ENTROPY_BOTH_INDICES
#undef STRATA_INSTANTIATE_CROSS_ENTROPY
// NOLINTEND(bugprone-macro-parentheses)

}  // namespace strata::cpu

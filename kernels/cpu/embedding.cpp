#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/element.h"

namespace strata::cpu {

template <typename T, typename I>
void embedding_forward(const I* ids, int64_t n, const T* table, int64_t vocab_start,
                       int64_t vocab_shard, int64_t d, T* out) {
#pragma omp parallel for schedule(static) if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = static_cast<int64_t>(ids[i]) - vocab_start;
    T* dst = out + i * d;
    if (row >= 0 && row < vocab_shard)
      std::memcpy(dst, table + row * d, static_cast<size_t>(d) * sizeof(T));
    else
      std::fill(dst, dst + d, T{});
  }
}

template <typename T, typename I>
void embedding_backward(const T* dout, const I* ids, int64_t n, int64_t vocab_start,
                        int64_t vocab_shard, int64_t d, T* dtable) {
  // Repeated ids add into the same table row, so threads split the columns, not the tokens: each
  // thread adds every token's slice of its columns in token order. No two threads touch one
  // element, and the sums come out the same whatever the thread count.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * d >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = static_cast<int64_t>(ids[i]) - vocab_start;
      if (row < 0 || row >= vocab_shard) continue;
      for (int64_t j = j0; j < j1; ++j)
        dtable[row * d + j] = store<T>(load(dtable[row * d + j]) + load(dout[i * d + j]));
    }
  }
}

#define STRATA_INSTANTIATE_EMBEDDING(T)                                                            \
  template void embedding_forward<T, int32_t>(const int32_t*, int64_t, const T*, int64_t, int64_t, \
                                              int64_t, T*);                                        \
  template void embedding_forward<T, int64_t>(const int64_t*, int64_t, const T*, int64_t, int64_t, \
                                              int64_t, T*);                                        \
  template void embedding_backward<T, int32_t>(const T*, const int32_t*, int64_t, int64_t,         \
                                               int64_t, int64_t, T*);                              \
  template void embedding_backward<T, int64_t>(const T*, const int64_t*, int64_t, int64_t,         \
                                               int64_t, int64_t, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_EMBEDDING)
#undef STRATA_INSTANTIATE_EMBEDDING

}  // namespace strata::cpu

#include "parallel/tensor_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace strata {

VocabShard vocab_shard(int64_t vocab_size, int64_t tp_rank, int64_t tp_size) {
  const int64_t multiple = 128 * tp_size;
  const int64_t padded = (vocab_size + multiple - 1) / multiple * multiple;
  VocabShard s;
  s.stride = padded / tp_size;
  s.start = tp_rank * s.stride;
  s.rows = std::clamp<int64_t>(vocab_size - s.start, 0, s.stride);
  STRATA_CHECK(s.rows > 0, "model.vocab_size = ", vocab_size, " is too small for tp = ", tp_size,
               ": padded to a multiple of 128 x tp = ", padded, ", tp rank ", tp_rank,
               " would hold no real vocabulary row (vocab_size must exceed 128 x (tp - 1))");
  return s;
}

}  // namespace strata

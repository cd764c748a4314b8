#include "parallel/tensor_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace strata {

Tensor TensorParallel::to_full(const Tensor& part) const {
  if (!splits_rows()) return part;
  Tensor full = Tensor::empty({part.size(0) * size, part.size(1)}, part.dtype(), allocator_of(part));
  group->all_gather(part, full);
  return full;
}

Tensor TensorParallel::from_partial(Tensor& partial) const {
  if (!splits_rows()) {
    reduce(partial);
    return partial;
  }
  STRATA_CHECK(partial.size(0) % size == 0, "sequence parallelism: ", partial.size(0),
               " rows (batch x seq) do not split over tp = ", size);
  Tensor part = Tensor::empty({partial.size(0) / size, partial.size(1)}, partial.dtype(), allocator_of(partial));
  group->reduce_scatter(partial, part, ReduceOp::sum);
  return part;
}

Tensor TensorParallel::own_rows(const Tensor& full) const {
  if (!splits_rows()) return full;
  STRATA_CHECK(full.size(0) % size == 0, "sequence parallelism: ", full.size(0),
               " rows (batch x seq) do not split over tp = ", size);
  const int64_t n = full.size(0) / size;
  return full.slice(0, rank * n, (rank + 1) * n).contiguous();
}

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

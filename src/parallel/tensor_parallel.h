// Tensor parallelism as the model layers see it (Shoeybi et al., "Megatron-LM", 2019): a
// column-parallel linear followed by a row-parallel one needs the conjugate operators f (identity
// forward, all-reduce of the input gradient backward) and g (all-reduce of the partial outputs
// forward, identity backward). Layers hold a TensorParallel and call reduce() where g's forward
// and f's backward fall; with one rank every call is a no-op, so the serial model is the tp = 1
// case of the same code.
#pragma once

#include <cstdint>

#include "comm/communicator.h"

namespace strata {

struct TensorParallel {
  Communicator* group = nullptr;  // the tp group; nullptr for one rank
  int64_t rank = 0;
  int64_t size = 1;
  // Sequence parallelism in the norm regions (Korthikanti et al., "Reducing Activation
  // Recomputation in Large Transformer Models", 2022): between the tp regions each rank holds
  // only its 1/tp of the rows (tokens); g becomes a reduce-scatter and f an all-gather.
  bool sequence_parallel = false;

  bool active() const { return size > 1; }
  bool splits_rows() const { return active() && sequence_parallel; }
  // Sums partial results over the tp group in place.
  void reduce(Tensor& x) const {
    if (active()) group->all_reduce(x, ReduceOp::sum);
  }
  // Entering a tp region: the full rows [rows, d] from this rank's part [rows / tp, d] (an
  // all-gather under sequence parallelism; the tensor itself otherwise).
  Tensor to_full(const Tensor& part) const;
  // Leaving a tp region: this rank's part of the sum of every rank's partial [rows, d] (a
  // reduce-scatter under sequence parallelism; an all-reduce in place otherwise).
  Tensor from_partial(Tensor& partial) const;
  // This rank's rows of a tensor every rank holds whole (no communication).
  Tensor own_rows(const Tensor& full) const;
};

// Vocabulary-parallel sharding: the vocabulary is padded to a multiple of 128 * tp (so every
// shard's size is a multiple of 128, which keeps the head's matrix products aligned), split into
// tp equal shards of `stride` rows, and rank r holds the real rows [start, start + rows) of its
// shard. Padding rows are never materialised, so they cannot change the loss.
struct VocabShard {
  int64_t start = 0;   // first vocabulary id of this rank
  int64_t rows = 0;    // real ids held (the last shard may hold fewer than stride)
  int64_t stride = 0;  // padded shard size
};
VocabShard vocab_shard(int64_t vocab_size, int64_t tp_rank, int64_t tp_size);

}  // namespace strata

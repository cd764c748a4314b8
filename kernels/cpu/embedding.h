// Token embedding on the CPU, aware of a vocabulary shard (Megatron's vocab-parallel embedding):
// this rank holds rows [vocab_start, vocab_start + vocab_shard) of the full table.
#pragma once

#include <cstdint>

namespace strata::cpu {

// out[i, :] = table[ids[i] - vocab_start, :] when ids[i] is in this shard, else 0 (the other
// shards' ranks fill it; an all-reduce over the tensor-parallel group completes the lookup).
// ids: [n]; table: [vocab_shard, d]; out: [n, d]. T = float, double, bf16 or f16 (the backward's
// sums in f32 for the 16-bit formats); I = int32_t or int64_t.
template <typename T, typename I>
void embedding_forward(const I* ids, int64_t n, const T* table, int64_t vocab_start,
                       int64_t vocab_shard, int64_t d, T* out);
// dtable[ids[i] - vocab_start, :] += dout[i, :] for every i whose id is in this shard.
template <typename T, typename I>
void embedding_backward(const T* dout, const I* ids, int64_t n, int64_t vocab_start,
                        int64_t vocab_shard, int64_t d, T* dtable);

}  // namespace strata::cpu

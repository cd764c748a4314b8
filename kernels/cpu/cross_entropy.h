// CPU cross-entropy kernels, shard-aware for vocab-parallel logits (Megatron-LM's parallel
// cross-entropy): each tensor-parallel rank holds the columns [vocab_start, vocab_start +
// vocab_shard) of the logits, computes per-row statistics of its shard, the statistics of every
// shard are gathered and combined into the loss and the global log-sum-exp, and each rank then
// computes the gradient of its own columns. Raw pointers, contiguous. T = float, double, bf16 or
// f16 stores the logits and dlogits; the arithmetic and every per-row statistic (max, sum_exp,
// target_logit, loss, lse, dloss) are C = compute_t<T> (kernels/cpu/element.h): f64 for f64, else
// f32. I = int32_t or int64_t for the targets; a negative target means "ignore this row".
#pragma once

#include <cstdint>

#include "kernels/cpu/element.h"

namespace strata::cpu {

// logits: [rows, vocab_shard]. Per row: max = max_j logit_j (-inf for an empty shard),
// sum_exp = sum_j exp(logit_j - max), target_logit = logit of the target when
// vocab_start <= target < vocab_start + vocab_shard, else 0. max, sum_exp, target_logit: [rows].
template <typename T, typename I>
void cross_entropy_stats(const T* logits, const I* targets, int64_t rows, int64_t vocab_shard,
                         int64_t vocab_start, compute_t<T>* max, compute_t<T>* sum_exp,
                         compute_t<T>* target_logit);

// max, sum_exp, target_logit: [shards, rows] in a statistics type C = float or double. Per row,
// with M the largest max over the shards:
//   lse = M + log sum_s sum_exp_s exp(max_s - M),  loss = lse - sum_s target_logit_s,
// and loss = 0 for an ignored row (lse is still computed). loss, lse: [rows].
template <typename C, typename I>
void cross_entropy_combine(const C* max, const C* sum_exp, const C* target_logit, const I* targets,
                           int64_t shards, int64_t rows, C* loss, C* lse);

// The whole vocabulary at once (one shard starting at 0): loss, lse: [rows]. Returns the first
// row whose target is >= vocab (its loss is meaningless), or -1 when every target is valid.
template <typename T, typename I>
int64_t cross_entropy_forward(const T* logits, const I* targets, int64_t rows, int64_t vocab,
                              compute_t<T>* loss, compute_t<T>* lse);

// dlogits_j = (exp(logit_j - lse) - [vocab_start + j == target]) * dloss for this shard's columns,
// with the global lse of the row; an ignored row gets 0. dlogits overwritten, [rows, vocab_shard];
// it may be the logits' own buffer (each logit is read before its gradient is written).
template <typename T, typename I>
void cross_entropy_backward(const T* logits, const I* targets, int64_t rows, int64_t vocab_shard,
                            int64_t vocab_start, const compute_t<T>* lse, const compute_t<T>* dloss,
                            T* dlogits);

}  // namespace strata::cpu

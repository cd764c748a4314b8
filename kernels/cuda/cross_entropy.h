// Launchers of the cross-entropy kernels (kernels/cuda/cross_entropy.cu): raw device pointers,
// sizes and the stream to queue on. Logits and dlogits are f32, bf16 or f16 (`dtype`); every
// per-row statistic (max, sum_exp, target_logit, loss, lse, dloss) is f32; targets are i32 or i64
// (`index_dtype`), a negative one meaning "ignore this row". The op front ends
// (kernels/ops_cross_entropy.cpp) check the tensors first; the semantics are the CPU kernels'
// (kernels/cpu/cross_entropy.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// logits: [rows, vocab_shard], the columns [vocab_start, vocab_start + vocab_shard) of the
// vocabulary. Per row: max, sum_exp = sum_j exp(logit_j - max), target_logit (0 when the target
// is not in this shard).
void cross_entropy_stats(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                         int64_t vocab_shard, int64_t vocab_start, float* max, float* sum_exp, float* target_logit,
                         cudaStream_t stream);
// max, sum_exp, target_logit: [shards, rows]. lse = M + log sum_s sum_exp_s exp(max_s - M),
// loss = lse - sum_s target_logit_s (0 for an ignored row). loss, lse: [rows].
void cross_entropy_combine(const float* max, const float* sum_exp, const float* target_logit, const void* targets,
                           DType index_dtype, int64_t shards, int64_t rows, float* loss, float* lse,
                           cudaStream_t stream);
// The whole vocabulary: loss, lse: [rows]. A target >= vocab gets loss NaN (a kernel cannot
// throw; the CPU path does).
void cross_entropy_forward(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                           int64_t vocab, float* loss, float* lse, cudaStream_t stream);
// dlogits = (exp(logit - lse) - onehot(target)) * dloss over this shard's columns; ignored rows 0.
// dlogits may be logits itself (each element is read before it is written, by the same thread).
void cross_entropy_backward(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                            int64_t vocab_shard, int64_t vocab_start, const float* lse, const float* dloss,
                            void* dlogits, cudaStream_t stream);

}  // namespace strata::cuda

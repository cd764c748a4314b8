// Launchers of the CUDA attention kernels (kernels/cuda/attention.cu): raw device pointers, the
// sizes and mask, and the stream to queue on. Elements are f32, bf16 or f16 (computed in f32); the
// statistics (lse) and every scratch buffer are f32. Layouts are those of kernels/cpu/attention.h;
// the op front ends (kernels/ops_attention.cpp) check the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// The sizes and the mask of one attention call. `scale` is resolved (never 0 here).
struct AttentionProblem {
  int64_t batch = 0, seq_q = 0, seq_k = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool causal = true;
  int64_t q_offset = 0, k_offset = 0;
  double scale = 1.0;
};

// The largest head_dim the kernels take (their tiles live in 48 KiB of shared memory).
inline constexpr int64_t kAttentionMaxHeadDim = 256;

// out, lse as ops::attention_forward. Tensor cores for bf16/f16 with head_dim 64 or 128, the SIMT
// kernel otherwise.
void attention_forward(const void* q, const void* k, const void* v, DType dtype,
                       const AttentionProblem& p, void* out, float* lse, cudaStream_t stream);
// The two kernels attention_forward picks from (the tests run each): the tensor-core one, which
// takes bf16 or f16 with head_dim 64 or 128 and 16-byte aligned q, k, v
// (attention_forward_has_mma), and the SIMT one, which takes everything.
bool attention_forward_has_mma(DType dtype, const AttentionProblem& p, const void* q, const void* k,
                               const void* v);
void attention_forward_mma(const void* q, const void* k, const void* v, DType dtype,
                           const AttentionProblem& p, void* out, float* lse, cudaStream_t stream);
void attention_forward_simt(const void* q, const void* k, const void* v, DType dtype,
                            const AttentionProblem& p, void* out, float* lse, cudaStream_t stream);

// dq, dk, dv as ops::attention_backward, deterministically (no atomics): D = rowsum(dout * out)
// into `delta` (attention_backward_scratch(p) floats of device memory), then one kernel over key
// tiles for dk, dv and one over query tiles for dq; tensor cores where the forward has them (and
// dout is 16-byte aligned), SIMT otherwise, or always with attention_backward_simt.
int64_t attention_backward_scratch(const AttentionProblem& p);
void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, DType dtype, const AttentionProblem& p,
                        float* delta, void* dq, void* dk, void* dv, cudaStream_t stream);
void attention_backward_simt(const void* dout, const void* q, const void* k, const void* v,
                             const void* out, const float* lse, DType dtype,
                             const AttentionProblem& p, float* delta, void* dq, void* dk, void* dv,
                             cudaStream_t stream);

// In place, as ops::attention_merge: out, out_b [batch, seq_q, n_heads, head_dim]; lse, lse_b
// [batch, n_heads, seq_q].
void attention_merge(void* out, float* lse, const void* out_b, const float* lse_b, DType dtype,
                     int64_t batch, int64_t seq_q, int64_t n_heads, int64_t head_dim,
                     cudaStream_t stream);

// ops::attention_decode split along the cache: p.causal on, p.k_offset 0. attention_decode_split
// resolves `split` (0 = choose from the sizes); each of the splits computes a partial out and lse
// into `scratch` (attention_decode_scratch(p, split) floats), and a merge kernel combines them.
int64_t attention_decode_split(const AttentionProblem& p, int64_t split);
int64_t attention_decode_scratch(const AttentionProblem& p, int64_t split);
void attention_decode(const void* q, const void* k, const void* v, DType dtype,
                      const AttentionProblem& p, int64_t split, float* scratch, void* out,
                      cudaStream_t stream);

}  // namespace strata::cuda

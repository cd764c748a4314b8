// CPU attention kernels in the flash form (Dao et al., "FlashAttention", 2022; "FlashAttention-2",
// 2023): scores are computed one (query tile, key tile) at a time and folded into an online
// softmax, so no [seq_q, seq_k] matrix is ever held and only the log-sum-exp is saved for backward.
// Raw pointers, contiguous. T = float, double, bf16 or f16 is the storage type; the arithmetic and
// the statistics (lse) are C = compute_t<T> (kernels/cpu/element.h): f64 for f64, else f32, so
// 16-bit tensors are loaded to f32, computed there, and rounded once when stored.
//
// Layouts (row-major):
//   q, out, dout, dq: [batch, seq_q, n_heads, head_dim]
//   k, v, dk, dv:     [batch, seq_k, n_kv_heads, head_dim]
//   lse:              [batch, n_heads, seq_q]
// Query head h reads kv head h / (n_heads / n_kv_heads) (grouped-query attention; MHA when the two
// counts agree, MQA when n_kv_heads = 1).
#pragma once

#include <cstdint>

#include "kernels/cpu/element.h"

namespace strata::cpu {

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq_q = 0;
  int64_t seq_k = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
};

// Which keys a query sees: with causal on, query row i (global position q_offset + i) sees key row
// j (global position k_offset + j) iff k_offset + j <= q_offset + i, i.e. exactly the key rows
// [0, visible_keys(i)). `scale` is the resolved softmax scale (never 0 here).
struct AttentionMask {
  bool causal = true;
  int64_t q_offset = 0;
  int64_t k_offset = 0;
  double scale = 1.0;
};

// Tile sizes in rows: a work item of the forward is one query tile of one (batch, head), which
// sweeps the keys one key tile at a time. Any positive sizes give the same result up to rounding;
// the tests vary them independently of the sequence lengths.
struct AttentionTiles {
  int64_t q = 32;
  int64_t k = 64;
};

// out = softmax(scale * q k^T + mask) v per (batch, head); lse = log sum_j exp(scale q.k_j) over
// the visible keys. A query row with no visible key gets lse = -inf and out = 0.
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const AttentionShape& shape,
                       const AttentionMask& mask, const AttentionTiles& tiles, T* out,
                       compute_t<T>* lse);

// Gradients for one (q, k/v) block pair given the final out and lse of the query rows:
//   p_ij = exp(scale q_i.k_j - lse_i) (0 where masked), D_i = dout_i . out_i,
//   ds_ij = p_ij (dout_i . v_j - D_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i,
// with dk, dv summed over the query heads of each kv head. Rows with lse = -inf contribute 0.
// dq, dk, dv are overwritten.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const compute_t<T>* lse, const AttentionShape& shape,
                        const AttentionMask& mask, const AttentionTiles& tiles, T* dq, T* dk,
                        T* dv);

// Causal attention of a few query rows against a KV cache, the cache cut into `split` chunks along
// seq_k (at most one a key; 1 or less: one sweep): each chunk is an attention_forward with its own
// k_offset (mask.k_offset + its start), in the compute type, merged into the result by
// attention_merge, and out rounded to T once. With one chunk this is attention_forward exactly.
template <typename T>
void attention_decode(const T* q, const T* k, const T* v, const AttentionShape& shape,
                      const AttentionMask& mask, int64_t split, T* out);

// In place: lse' = logaddexp(lse, lse_b), out' = out exp(lse - lse') + out_b exp(lse_b - lse').
// A side with lse = -inf has weight 0; if both are -inf the row stays lse = -inf, out = 0.
// out, out_b: [batch, seq_q, n_heads, head_dim]; lse, lse_b: [batch, n_heads, seq_q].
template <typename T>
void attention_merge(T* out, compute_t<T>* lse, const T* out_b, const compute_t<T>* lse_b,
                     int64_t batch, int64_t seq_q, int64_t n_heads, int64_t head_dim);

}  // namespace strata::cpu

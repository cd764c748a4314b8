// Ring attention over the sequence-parallel (sp) group (Liu et al., "Ring Attention with Blockwise
// Transformers for Near-Infinite Context", 2023): each rank keeps its own queries and passes its
// K/V block around the ring, attending its queries to one visiting block per step while the next
// block is in flight; the partial results merge by their log-sum-exp (ops::attention_merge), so
// the result is exactly causal attention over the whole sequence, without any rank ever holding
// more than two K/V blocks.
//
// Zigzag split (the load balancing of Megatron-LM's context parallelism and of Llama 3's): the
// sequence of `seq` tokens is cut into 2*sp chunks of c = seq / (2*sp) tokens and rank r holds
// chunks r and 2*sp-1-r, concatenated in that order: local row i < c is global position r*c + i,
// local row c + i is (2*sp-1-r)*c + i. Under the causal mask a contiguous split would give the
// last rank sp times the work of the first; with the zigzag every rank holds one early and one
// late chunk, and every ring step costs every rank the same two c x c blocks of scores:
//   step 0 (its own block):   q_r x k_r (diagonal, half), q_late x k_r (full), q_late x k_late
//                             (diagonal, half); q_r x k_late is all future and skipped;
//   block of rank s < r:      both local q chunks x k_s (full); k_{2sp-1-s} is after both;
//   block of rank s > r:      q_late x both chunks of s (full); q_r precedes both.
// So each rank does sp * 2 c^2 of the (2 sp c)^2 / 2 score pairs: exactly its share.
//
// Tensors are local: this rank's two chunks, in the order above.
//   q, out, dout, dq: [batch, 2c, n_heads, head_dim]
//   k, v, dk, dv:     [batch, 2c, n_kv_heads, head_dim]
//   lse:              [batch, n_heads, 2c] in ops::stats_dtype(q.dtype())
// All contiguous, on the CPU (the attention ops have no CUDA kernels yet). `scale` as in
// ops::AttentionArgs (0 means 1 / sqrt(head_dim)). Every rank of the group calls with the same
// shapes. With one rank nothing is communicated and the result is ops::attention_* on the whole
// sequence (up to the order of the merge's additions).
//
// Transfers are point-to-point (Communicator::send_recv_async), which the group's cross-rank size
// check does not cover, so nothing in the ring blocks except waiting for the next block.
#pragma once

#include <array>
#include <cstdint>

#include "comm/communicator.h"
#include "core/tensor.h"

namespace strata {

// What the ring's transfers cost: how many were started, their bytes, and the time the ring
// waited for them (the part of their time the compute did not hide).
struct RingStats {
  int64_t transfers = 0;
  int64_t bytes = 0;
  double wait_ms = 0;
};

// Sequence parallelism as the model sees it: the sp group its attention rings over. With one rank
// (the default) attention is the plain op and positions start at 0.
struct SequenceParallel {
  Communicator* group = nullptr;  // the sp group; nullptr for one rank
  int rank = 0;
  int size = 1;
  RingStats* stats = nullptr;  // when set, every ring call adds its transfers to it
  bool active() const { return size > 1; }
};

// c = seq_len / (2 sp). Refuses a seq_len that is not a positive multiple of 2 sp, naming
// train.seq_len and parallel.sp, since those are the settings a user changes.
int64_t zigzag_chunk_len(int64_t seq_len, int sp);

// Global positions of the first rows of rank `rank`'s two chunks: {rank c, (2 sp - 1 - rank) c}.
std::array<int64_t, 2> zigzag_offsets(int rank, int sp, int64_t chunk_len);

// This rank's local tensor out of a full one: `full` has the whole sequence along `dim` (1 for
// [batch, seq, ...] activations, 2 for lse [batch, n_heads, seq]); the result (a new contiguous
// tensor) has 2c rows there, chunk `rank` then chunk 2 sp - 1 - rank. `full` must be contiguous.
Tensor zigzag_local(const Tensor& full, int rank, int sp, int dim = 1);

// The two chunks of a local tensor (2c rows along `dim`), each a new contiguous tensor of c rows,
// and the inverse, which writes them back into rows [0, c) and [c, 2c) of `local`.
std::array<Tensor, 2> zigzag_split_chunks(const Tensor& local, int dim = 1);
void zigzag_join_chunks(const std::array<Tensor, 2>& chunks, Tensor& local, int dim = 1);

// Causal attention of the local queries over the whole sequence's keys. out and lse are
// overwritten; lse is saved for the backward.
// `stats`, when given, accumulates the transfers.
void ring_attention_forward(Communicator& group, const Tensor& q, const Tensor& k, const Tensor& v,
                            double scale, Tensor& out, Tensor& lse, RingStats* stats = nullptr);

// Gradients of the forward above, given its out and lse: dq of the local queries, and dk, dv of the
// local keys and values summed over every rank's queries. dq, dk, dv are overwritten.
void ring_attention_backward(Communicator& group, const Tensor& dout, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             double scale, Tensor& dq, Tensor& dk, Tensor& dv,
                             RingStats* stats = nullptr);

}  // namespace strata

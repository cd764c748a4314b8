// The op set: the single list of compute operations Strata's model, optimizer and parallel layers
// use. Each op takes Tensors, checks their shapes, dtypes and devices (a mismatch throws an Error
// that names the op, the argument and both shapes), and runs the implementation for the tensors'
// device: kernels/cpu (the reference: plain loops, OpenMP, OpenBLAS for gemm) or kernels/cuda.
//
// Conventions, the same for every op:
// - Outputs are passed in, allocated by the caller with the documented shape and dtype.
// - Activation gradients (dx, dq, ...) are overwritten. Parameter gradients (dweight, dbias,
//   dtable) are accumulated (+=), so microbatches add into one gradient buffer.
// - Floating tensors of one call share one dtype (f32 or f64 on the CPU) unless noted; statistics
//   saved for backward (mean, rstd, lse) are f32 for f32/bf16/f16 inputs and f64 for f64 inputs.
// - Index tensors (token ids, targets) are i32 or i64; a negative target means "ignore".
// - Shapes in comments: rows = every leading dimension flattened.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace strata::ops {

// The dtype that statistics saved for backward take for inputs of `dtype` (f64 stays f64).
DType stats_dtype(DType dtype);

// ---- matrix products ----------------------------------------------------------------------

struct GemmArgs {
  bool trans_a = false;  // use a^T
  bool trans_b = false;  // use b^T
  double alpha = 1.0;
  double beta = 0.0;  // c = alpha * op(a) @ op(b) + beta * c
};
// c[m, n] = alpha * op(a)[m, k] @ op(b)[k, n] + beta * c. 2-D tensors, or 3-D with a leading batch
// dimension on all three (a strided batch: one product per batch index). Contiguous.
void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmArgs& args = {});

// Work fused after a product (on CUDA, cuBLASLt's epilogues; on the CPU, gemm followed by the same
// steps). With pre = alpha * op(a) @ op(b) + beta * c (+ bias):
// - bias [n] (c's dtype): added to every row of c (every batch too).
// - gelu: c = gelu(pre); gelu_aux (c's shape and dtype), when given, receives pre for backward.
// - dgelu_aux (c's shape and dtype): c = pre * gelu'(dgelu_aux), the gradient through the GELU
//   whose input the forward saved; no bias and no gelu with it.
// - bias_grad (c's dtype, overwritten, 2-D products only): with dgelu_aux, [n] = the column sums
//   of the new c (the bias gradient of the layer before the GELU); without, [m] = the sums of
//   op(a)'s rows over k (dbias = the column sums of dy in dW = dy^T @ x, a = dy, trans_a).
struct GemmEpilogue {
  const Tensor* bias = nullptr;
  bool gelu = false;
  Tensor* gelu_aux = nullptr;
  const Tensor* dgelu_aux = nullptr;
  Tensor* bias_grad = nullptr;
};
void gemm_ex(const Tensor& a, const Tensor& b, Tensor& c, const GemmArgs& args,
             const GemmEpilogue& epilogue);

// ---- normalisation ------------------------------------------------------------------------

// y = (x - mean) * rstd * weight + bias over the last dimension.
// x, y: [rows, d]; weight, bias: [d] (bias may be undefined); mean, rstd: [rows] (stats dtype).
void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd);
// dx overwritten; dweight, dbias accumulated (dbias may be undefined when there is no bias).
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias);

// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps). x, y: [rows, d]; weight: [d].
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight);

// The residual add fused with the norm that follows it (pre-norm transformer blocks):
// residual_out = x + residual_in, rounded to the dtype, then y = norm(residual_out) exactly as
// layernorm_forward / rmsnorm_forward compute it, so the result is that of add followed by the
// norm. residual_out, x, residual_in, y: [rows, d]; residual_out may alias x or residual_in.
void add_layernorm_forward(const Tensor& x, const Tensor& residual_in, const Tensor& weight,
                           const Tensor& bias, double eps, Tensor& residual_out, Tensor& y,
                           Tensor& mean, Tensor& rstd);
void add_rmsnorm_forward(const Tensor& x, const Tensor& residual_in, const Tensor& weight,
                         double eps, Tensor& residual_out, Tensor& y, Tensor& rstd);
// Their backward, where the residual stream's gradient from later (dresidual) meets the norm's:
// dx = dresidual + the norm's dx, the gradient of residual_out (and so of both x and residual_in).
// x is the norm's input (the forward's residual_out); dy the gradient of y. The result is that of
// layernorm_backward / rmsnorm_backward followed by ops::add(dx, dresidual), bit for bit, in one
// pass (on CUDA when dresidual is 16-byte aligned like the other rows, as the allocator's tensors
// are: a misaligned one sends the row sums down the scalar path, whose order differs).
// dx, dy, dresidual: [rows, d]; dx may alias dresidual; dweight, dbias as for the plain ops.
void add_layernorm_backward(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                            const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                            Tensor& dx, Tensor& dweight, Tensor& dbias);
void add_rmsnorm_backward(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                          const Tensor& weight, const Tensor& rstd, Tensor& dx, Tensor& dweight);

// ---- activations --------------------------------------------------------------------------

// GPT-2's tanh approximation: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Any shape.
void gelu_forward(const Tensor& x, Tensor& y);
void gelu_backward(const Tensor& dy, const Tensor& x, Tensor& dx);

// y = silu(gate) * up, silu(g) = g / (1 + exp(-g)). gate, up, y: same shape.
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& y);
void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup);

// ---- rotary position embedding ------------------------------------------------------------

// x, y: [batch, seq, heads, head_dim], head_dim even. Position of row s is position_offset + s.
// Pairs element j with j + head_dim/2 (the "rotate half" form Hugging Face Llama uses), angle
// pos * theta^(-2j/head_dim). backward applies the inverse rotation to dy. y may alias x.
void rope_forward(const Tensor& x, int64_t position_offset, double theta, Tensor& y);
void rope_backward(const Tensor& dy, int64_t position_offset, double theta, Tensor& dx);

// ---- attention ----------------------------------------------------------------------------

struct AttentionArgs {
  bool causal = true;
  // Global positions of the first query and first key row: with causal on, query at q_offset + i
  // sees key at k_offset + j iff k_offset + j <= q_offset + i. Ring attention calls the op on
  // blocks of the sequence with their offsets.
  int64_t q_offset = 0;
  int64_t k_offset = 0;
  double scale = 0.0;  // 0 means 1 / sqrt(head_dim)
};
// Flash form: tiled over keys with an online softmax; saves only the log-sum-exp.
// q, out: [batch, seq_q, n_heads, head_dim]; k, v: [batch, seq_k, n_kv_heads, head_dim];
// n_kv_heads divides n_heads (query head h uses kv head h / (n_heads / n_kv_heads)).
// lse: [batch, n_heads, seq_q] (stats dtype) = log sum_j exp(scale q.k_j); a query row that sees no
// key gets lse = -inf and out = 0, so partial results merge by their lse.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                       Tensor& out, Tensor& lse);
// Gradients of one (q block, k/v block) pair given the *final* out and lse of the query rows (for
// one full attention these are this call's own; for ring attention, the merged ones). dq, dk, dv
// overwritten.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionArgs& args, Tensor& dq,
                        Tensor& dk, Tensor& dv);
// Merges a partial result (out_b, lse_b) into (out, lse) in place: lse' = logaddexp(lse, lse_b),
// out' = out * exp(lse - lse') + out_b * exp(lse_b - lse'). Shapes as attention_forward's.
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_b, const Tensor& lse_b);
// Causal attention of a few new query rows against a KV cache (generation): q [batch, n_q, n_heads,
// head_dim] holds the rows at global positions q_offset .. q_offset + n_q - 1, k and v [batch, len,
// n_kv_heads, head_dim] the cache at positions 0 .. len - 1; scale 1 / sqrt(head_dim). out (q's
// shape) is attention_forward's with causal on, k_offset 0. `split` cuts the cache into that many
// chunks computed independently and merged by their lse (0 = the backend chooses); the result
// is the same up to rounding.
void attention_decode(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_offset,
                      Tensor& out, int64_t split = 0);

// ---- cross-entropy ------------------------------------------------------------------------

// Per-row statistics of one vocabulary shard: logits [rows, vocab_shard] hold the columns
// [vocab_start, vocab_start + vocab_shard) of the full vocabulary. For each row:
//   max = max_j logit_j, sum_exp = sum_j exp(logit_j - max),
//   target_logit = logit of the target if it falls in this shard, else 0.
// max, sum_exp, target_logit: [rows] (stats dtype); targets: [rows] i32/i64.
void cross_entropy_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                         Tensor& max, Tensor& sum_exp, Tensor& target_logit);
// Combines the statistics of several shards (stacked on a leading dim: [shards, rows]) into the
// loss per row: lse = M + log sum_s sum_exp_s exp(max_s - M), loss = lse - sum_s target_logit_s;
// ignored rows get loss 0. loss, lse: [rows].
void cross_entropy_combine(const Tensor& max, const Tensor& sum_exp, const Tensor& target_logit,
                           const Tensor& targets, Tensor& loss, Tensor& lse);
// Whole vocabulary in one call: loss, lse: [rows]. A target >= vocab throws on the CPU; on CUDA
// (a kernel cannot throw) that row's loss is NaN.
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse);
// dlogits = (softmax(logits) - onehot(target)) * dloss for one shard, using the global lse.
// dloss: [rows] (stats dtype); ignored rows get zero gradient. dlogits overwritten; it may be the
// logits tensor itself (each logit is read before its gradient is written), which the model uses
// to avoid a second [rows, vocab] buffer. Every backend must keep that in-place form working.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& dloss, Tensor& dlogits);

// ---- embedding ----------------------------------------------------------------------------

// out[i] = table[ids[i] - vocab_start] when that row is in this shard, else 0 (vocab-parallel).
// ids: [n] i32/i64; table: [vocab_shard, d]; out: [n, d].
void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out);
// dtable[ids[i] - vocab_start] += dout[i] for ids in this shard.
void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, Tensor& dtable);

// ---- optimizer ----------------------------------------------------------------------------

struct AdamWArgs {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;  // 1-based, for bias correction
  double grad_scale = 1.0;  // grad is multiplied by this first (unscaling, clipping)
};
// Loshchilov & Hutter's decoupled weight decay, fused in one pass:
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   param -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * param).
// param, m, v: f32 or f64 (master precision); grad: same dtype, or bf16/f16.
void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWArgs& args);

// One parameter of a multi-tensor AdamW step: param, m, v f32 (f64 on the CPU too), grad of
// param's shape in that dtype or bf16/f16; copy (optional) of param's shape in bf16/f16 (or
// param's dtype) receives the updated param rounded, in the same pass (the model's low-precision
// weights). weight_decay: whether args.weight_decay applies to this one.
struct AdamWGroup {
  Tensor param, grad, m, v;
  Tensor copy;  // may be undefined
  bool weight_decay = true;
};
// adamw() on every entry with the gradient multiplied by grad_scale (one f32 on the tensors'
// device, e.g. from clip_factor; args.grad_scale must be 1), and nothing at all done when
// skip_flag (one i32 on the device) is nonzero: the trainer decides both without a host sync.
void adamw_multi(std::vector<AdamWGroup>& tensors, const AdamWArgs& args,
                 const Tensor& grad_scale, const Tensor& skip_flag);
// sum_squares (one f64 on the grads' device) = sum of all grads' elements squared, in f64, in an
// order fixed by the list and sizes; nonfinite_flag (one i32) = 1 when that sum is not finite (for
// f32/bf16/f16 grads: an element is NaN or inf), else 0. With accumulate, both add to / or into.
void grad_norm_and_check(const std::vector<const Tensor*>& grads, Tensor& sum_squares,
                         Tensor& nonfinite_flag, bool accumulate = false);
struct ClipArgs {
  double max_norm = 0.0;    // <= 0: no clipping
  double loss_scale = 1.0;  // the gradients hold loss_scale times their true values
};
// The trainer's step decision on the device, with its formulas (src/train/trainer.cpp):
//   norm = sqrt(sum of sum_squares' elements, in order) / loss_scale   -> norm (one f64)
//   clip = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1
//   grad_scale (one f32) = clip / loss_scale
//   skip_flag (one i32) = 1 when nonfinite_flag is nonzero, norm is not finite or loss (one f64,
//   may be undefined) is not finite; else 0. grad_scale is 0 when skipping.
void clip_factor(const Tensor& sum_squares, const Tensor& nonfinite_flag, const Tensor& loss,
                 const ClipArgs& args, Tensor& grad_scale, Tensor& skip_flag, Tensor& norm);

// ---- elementwise and reductions -----------------------------------------------------------

// dst = src converted to dst's dtype (floating dtypes; round to nearest even when narrowing).
void cast(const Tensor& src, Tensor& dst);
// x[i] = value (rounded once to x's dtype).
void fill(Tensor& x, double value);
// out = a + b (same shape; out may alias a or b).
void add(const Tensor& a, const Tensor& b, Tensor& out);
// x *= alpha.
void scale(Tensor& x, double alpha);
// y += alpha * x (same dtype, or x bf16/f16 accumulated into an f32 y).
void axpy(double alpha, const Tensor& x, Tensor& y);
// Sum and sum of squares of all elements, accumulated in f64.
double sum(const Tensor& x);
double sum_squares(const Tensor& x);
double l2_norm(const Tensor& x);
// acc += scale * sum(x), where acc is a one-element f64 tensor on x's device: a reduction that
// stays on the device (no host synchronisation), summed in f64 in the order sum() uses.
void sum_into(const Tensor& x, double scale, Tensor& acc);
// The k largest values of each row and their column indices, largest first (ties: lower index
// first). x: [rows, n]; values: [rows, k] (x's dtype); indices: [rows, k] i32.
void topk(const Tensor& x, int64_t k, Tensor& values, Tensor& indices);

// ---- mixture-of-experts routing (src/model/moe.h has the math) ----
// rows tokens, E experts, k choices a token, d features; a token-choice c = r k + j. `expert`,
// `row` [rows, k] i32; `gate`, `dgate` [rows, k] f64; `counts` [2, E] i64 (chosen, then load);
// row tensors [*, d] f32/bf16/f16 (and f64 on the CPU), all of one dtype. A kept choice's `row`
// is its row in the packed expert blocks (-1 when dropped): expert e's block holds its kept
// choices in fill order. Sums run in f64 and round once.
//
// scores [rows, E] -> probs [rows, E] f64 (softmax), lse [rows] f64, expert (the k most probable,
// larger first, ties to the lower index), gate (p / the sum of the k chosen p; k = 1: p).
void moe_route(const Tensor& scores, int64_t k, Tensor& probs, Tensor& lse, Tensor& expert, Tensor& gate);
// Capacity: a choice's place is its rank among its expert's choices counted in fill order
// (every token's first choice, then every second, ...); at `capacity` and past it, the choice is
// dropped (row -1). The blocks: with rows_per_expert > 0 (at least `capacity`), expert e's block
// starts at row e * rows_per_expert, a fixed layout whose unused rows are padding (so sizes never
// depend on the routing and need no read of the counts); with 0, right after the load of the
// experts before e (no padding: sum of load rows in all).
void moe_capacity(const Tensor& expert, int64_t n_experts, int64_t capacity, int64_t rows_per_expert,
                  Tensor& row, Tensor& counts);
// losses [2] f64 = {E sum_e f_e P_e, mean lse^2}: f_e = chosen_e / (rows k), P_e = mean p[:, e].
void moe_routing_losses(const Tensor& probs, const Tensor& lse, const Tensor& counts, int64_t k, Tensor& losses);
// sum [2 E + 2] f64 += {chosen, load, losses} (counts as f64): a forward's routing added to a
// running total on the device, read once when the metrics want it.
void moe_routing_accumulate(const Tensor& counts, const Tensor& losses, Tensor& sum);
// packed [n, d]: packed[row[c]] = x[c / k] for each kept choice; rows no choice names are left
// as they were (padding is the caller's to clear).
void moe_dispatch(const Tensor& x, const Tensor& row, Tensor& packed);
// y [rows, d] = sum over the token's kept choices of gate x out[row] (0 when none).
void moe_combine(const Tensor& out, const Tensor& row, const Tensor& gate, Tensor& y);
// combine's backward: dout[row[c]] = gate dy[token]; dgate = dy[token] . out[row[c]] (0 for a
// dropped choice); dout's rows no choice names are left as they were.
void moe_combine_backward(const Tensor& dy, const Tensor& out, const Tensor& row, const Tensor& gate,
                          Tensor& dout, Tensor& dgate);
// dispatch's backward: dx [rows, d] = sum over the token's kept choices of din[row], plus add
// [rows, d] when it is given.
void moe_dispatch_backward(const Tensor& din, const Tensor& row, const Tensor* add, Tensor& dx);
// The router scores' gradient dscores [rows, E] from the gates' and the auxiliary losses'
// (their coefficients and the loss scale; f_e from counts' chosen row).
struct MoeLossArgs {
  double loss_scale = 1.0;
  double aux_coef = 0.0;
  double z_coef = 0.0;
};
void moe_router_backward(const Tensor& probs, const Tensor& lse, const Tensor& expert, const Tensor& gate,
                         const Tensor& dgate, const Tensor& counts, MoeLossArgs args, Tensor& dscores);

// ---- weight-only int8 (inference) ------------------------------------------------------------

// A weight W [rows, cols] quantised per row (symmetric, round to nearest, ties away from zero):
//   scale[r] = max_c |W[r, c]| / 127 (1 for a row of zeros)
//   q[r, c] = clamp(round(W[r, c] / scale[r]), -127, 127)
// and read back as W[r, c] = T(float(q[r, c]) * scale[r]) in the activation dtype T. codes holds
// row r's q[r, 0..cols) as bytes, zero-padded to whole i32 words: [rows, ceil(cols / 4)] i32 is
// only the container (byte c of a row is at byte offset c), so every row starts 4-byte aligned.
struct Int8Weight {
  Tensor codes;  // [rows, ceil(cols / 4)] i32, the int8 codes
  Tensor scale;  // [rows] f32
  int64_t cols = 0;

  bool defined() const { return codes.defined(); }
  int64_t rows() const { return scale.size(0); }
  int64_t row_bytes() const { return codes.size(1) * 4; }
  int64_t nbytes() const { return static_cast<int64_t>(codes.nbytes() + scale.nbytes()); }
  // Rows [start, end) (a view of the same memory).
  Int8Weight rows_slice(int64_t start, int64_t end) const;
};

// w [rows, cols] (any floating dtype, either device), quantised on the host (once, at load) and
// placed on w's device.
Int8Weight quantize_int8(const Tensor& w);
// w [rows, cols] f32/bf16/f16 (f64 on the CPU too) = the dequantised weight, on q's device.
void dequantize_int8(const Int8Weight& q, Tensor& w);
// y [m, rows] = x [m, cols] W^T in x's dtype. On the CPU and for m > 8 on CUDA: W dequantised into
// a scratch buffer, then gemm; for m <= 8 on CUDA a fused GEMV that reads the int8 codes only.
void gemm_int8(const Tensor& x, const Int8Weight& w, Tensor& y);

}  // namespace strata::ops

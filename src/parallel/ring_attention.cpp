#include "parallel/ring_attention.h"

#include <chrono>
#include <string_view>
#include <utility>

#include "core/error.h"
#include "core/random.h"
#include "kernels/ops.h"

namespace strata {
namespace {

// Copies rows [src_start, src_start + len) along `dim` of `src` into rows [dst_start, dst_start +
// len) of `dst`. Both contiguous, of one dtype, with equal sizes on every other dim. For each index
// of the dims before `dim` the run of rows is contiguous in both, so the copy is one copy_from per
// such index, on one-dimensional views.
void copy_rows(const Tensor& src, int64_t src_start, Tensor& dst, int64_t dst_start, int64_t len,
               int dim) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= src.size(d);
  for (int d = dim + 1; d < src.ndim(); ++d) inner *= src.size(d);
  const int64_t src_run = src.size(dim) * inner, dst_run = dst.size(dim) * inner;
  const Tensor src_flat = src.view({src.numel()});
  const Tensor dst_flat = dst.view({dst.numel()});
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t from = o * src_run + src_start * inner, to = o * dst_run + dst_start * inner;
    Tensor dst_rows = dst_flat.slice(0, to, to + len * inner);
    dst_rows.copy_from(src_flat.slice(0, from, from + len * inner));
  }
}

// The two chunks of a local tensor (2c rows along `dim`), each a new contiguous tensor of c rows.
std::array<Tensor, 2> split_chunks(const Tensor& local, int dim) {
  Shape shape = local.shape();
  const int64_t c = shape[static_cast<size_t>(dim)] / 2;
  shape[static_cast<size_t>(dim)] = c;
  std::array<Tensor, 2> chunks;
  for (int h = 0; h < 2; ++h) {
    chunks[static_cast<size_t>(h)] = Tensor::empty(shape, local.dtype(), allocator_of(local));
    copy_rows(local, h * c, chunks[static_cast<size_t>(h)], 0, c, dim);
  }
  return chunks;
}

// The inverse: writes the two chunks into the local tensor's rows [0, c) and [c, 2c) along `dim`.
void join_chunks(const std::array<Tensor, 2>& chunks, int dim, Tensor& local) {
  const int64_t c = chunks[0].size(dim);
  for (int h = 0; h < 2; ++h) copy_rows(chunks[static_cast<size_t>(h)], 0, local, h * c, c, dim);
}

// A K/V block (or its gradient) travels as one buffer of four slots, so each ring step is one
// message: [4, batch, c, n_kv_heads, head_dim] = (k or dk of chunk 0, of chunk 1, v or dv of
// chunk 0, of chunk 1). Chunk 0 is the owner's early chunk, chunk 1 its late one.
constexpr int kKeySlot = 0;
constexpr int kValueSlot = 2;

// Slot `i` of a block buffer as a contiguous [batch, c, n_kv_heads, head_dim] view.
Tensor slot(const Tensor& block, int i) {
  return block.slice(0, i, i + 1).view(Shape(block.shape().begin() + 1, block.shape().end()));
}

Tensor pack_block(const Tensor& k, const Tensor& v, int64_t c) {
  Shape shape = k.shape();
  shape[1] = c;
  shape.insert(shape.begin(), 4);
  Tensor block = Tensor::empty(shape, k.dtype(), allocator_of(k));
  for (int h = 0; h < 2; ++h) {
    Tensor k_slot = slot(block, kKeySlot + h), v_slot = slot(block, kValueSlot + h);
    copy_rows(k, h * c, k_slot, 0, c, 1);
    copy_rows(v, h * c, v_slot, 0, c, 1);
  }
  return block;
}

void unpack_block(const Tensor& block, Tensor& k, Tensor& v) {
  join_chunks({slot(block, kKeySlot), slot(block, kKeySlot + 1)}, 1, k);
  join_chunks({slot(block, kValueSlot), slot(block, kValueSlot + 1)}, 1, v);
}

// Sizes of one call; every tensor's shape follows from them.
struct RingShape {
  int64_t batch = 0, chunk = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  DType dtype = DType::f32;

  Shape q_shape() const { return {batch, 2 * chunk, n_heads, head_dim}; }
  Shape kv_shape() const { return {batch, 2 * chunk, n_kv_heads, head_dim}; }
  Shape lse_shape() const { return {batch, n_heads, 2 * chunk}; }
};

// Defined, contiguous, of the expected shape and dtype (on the CPU or a CUDA device: the ops it
// runs check that q, k, v and the outputs share one device).
void check_tensor(std::string_view op, const Communicator& group, std::string_view name,
                  const Tensor& t, const Shape& shape, DType dtype) {
  STRATA_CHECK(t.defined(), op, " on ", group.where(), ": ", name, " is undefined");
  STRATA_CHECK(t.shape() == shape && t.dtype() == dtype, op, " on ", group.where(), ": ", name,
               " is ", t.describe(), ", expected ", dtype_name(dtype), shape_string(shape));
  STRATA_CHECK(t.is_contiguous(), op, " on ", group.where(), ": ", name, " ", t.describe(),
               " must be contiguous");
}

// Reads the sizes from q [batch, 2c, n_heads, head_dim] and k [batch, 2c, n_kv_heads, head_dim]
// and checks q, k, v against them.
RingShape ring_shape(std::string_view op, const Communicator& group, const Tensor& q,
                     const Tensor& k, const Tensor& v) {
  STRATA_CHECK(q.defined() && q.ndim() == 4 && k.defined() && k.ndim() == 4, op, " on ",
               group.where(), ": q and k must be [batch, 2c, heads, head_dim], got q ",
               q.defined() ? q.describe() : "undefined", " and k ",
               k.defined() ? k.describe() : "undefined");
  RingShape s{q.size(0), q.size(1) / 2, q.size(2), k.size(2), q.size(3), q.dtype()};
  STRATA_CHECK(s.chunk > 0 && q.size(1) % 2 == 0, op, " on ", group.where(), ": q ", q.describe(),
               " must hold this rank's two zigzag chunks: an even, positive number of rows");
  STRATA_CHECK(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0, op, " on ", group.where(),
               ": n_kv_heads=", s.n_kv_heads, " (k ", k.describe(),
               ") must divide n_heads=", s.n_heads, " (q ", q.describe(), ")");
  check_tensor(op, group, "q", q, s.q_shape(), s.dtype);
  check_tensor(op, group, "k", k, s.kv_shape(), s.dtype);
  check_tensor(op, group, "v", v, s.kv_shape(), s.dtype);
  return s;
}

}  // namespace

std::array<Tensor, 2> zigzag_split_chunks(const Tensor& local, int dim) {
  STRATA_CHECK(local.is_contiguous() && dim >= 0 && dim < local.ndim() && local.size(dim) % 2 == 0,
               "zigzag chunks of ", local.describe(), " along dim ", dim,
               ": need a contiguous tensor with an even number of rows there");
  return split_chunks(local, dim);
}

void zigzag_join_chunks(const std::array<Tensor, 2>& chunks, Tensor& local, int dim) {
  STRATA_CHECK(local.is_contiguous() && local.size(dim) == 2 * chunks[0].size(dim),
               "zigzag chunks joined into ", local.describe(), " along dim ", dim);
  join_chunks(chunks, dim, local);
}

namespace {

// Whether every key of a chunk at k_pos comes after every query of a chunk at q_pos (both c
// rows): the causal mask hides the whole pair, which is then never computed. Chunks start at
// multiples of c, so a pair is either hidden, diagonal (k_pos = q_pos) or fully visible.
bool hidden(int64_t q_pos, int64_t k_pos, int64_t c) {
  return k_pos > q_pos + c - 1;
}

int next_rank(const Communicator& group) {
  return (group.rank() + 1) % group.size();
}
int prev_rank(const Communicator& group) {
  return (group.rank() - 1 + group.size()) % group.size();
}

// One ring step's transfer: `send` to the next rank, `recv` from the previous, in flight.
CommHandle start_transfer(Communicator& group, const Tensor& send, Tensor& recv,
                          RingStats* ring_stats) {
  if (ring_stats) {
    ++ring_stats->transfers;
    ring_stats->bytes += static_cast<int64_t>(send.nbytes());
  }
  return group.send_recv_async(send, next_rank(group), recv, prev_rank(group));
}

void timed_wait(CommHandle& transfer, RingStats* ring_stats) {
  const auto start = std::chrono::steady_clock::now();
  transfer.wait();
  if (ring_stats)
    ring_stats->wait_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int64_t zigzag_chunk_len(int64_t seq_len, int sp) {
  STRATA_CHECK(sp >= 1, "parallel.sp = ", sp, " must be at least 1");
  STRATA_CHECK(seq_len > 0 && seq_len % (2 * static_cast<int64_t>(sp)) == 0,
               "train.seq_len = ", seq_len, " is not a multiple of 2 x parallel.sp = ", 2 * sp,
               " (ring attention splits each sequence into 2 x sp chunks)");
  return seq_len / (2 * static_cast<int64_t>(sp));
}

std::array<int64_t, 2> zigzag_offsets(int rank, int sp, int64_t chunk_len) {
  STRATA_CHECK(0 <= rank && rank < sp, "zigzag_offsets: rank ", rank, " outside sp = ", sp);
  return {rank * chunk_len, (2 * static_cast<int64_t>(sp) - 1 - rank) * chunk_len};
}

Tensor zigzag_local(const Tensor& full, int rank, int sp, int dim) {
  STRATA_CHECK(full.defined() && 0 <= dim && dim < full.ndim() && full.is_contiguous(),
               "zigzag_local: needs a contiguous tensor with a sequence dimension ", dim, ", got ",
               full.defined() ? full.describe() : "undefined");
  const int64_t c = zigzag_chunk_len(full.size(dim), sp);
  Shape shape = full.shape();
  shape[static_cast<size_t>(dim)] = 2 * c;
  Tensor local = Tensor::empty(shape, full.dtype(), allocator_of(full));
  const std::array<int64_t, 2> pos = zigzag_offsets(rank, sp, c);
  for (int h = 0; h < 2; ++h) copy_rows(full, pos[static_cast<size_t>(h)], local, h * c, c, dim);
  return local;
}

// Step i (0 <= i < sp) attends the local queries to the block of rank (r - i) mod sp: each step
// every rank passes the block it holds to r + 1, so after i hops the block of rank r - i has
// reached r. The transfer of the block for step i + 1 runs during step i's compute, into the
// second buffer; sp - 1 transfers in all, none with one rank.
void ring_attention_forward(Communicator& group, const Tensor& q, const Tensor& k, const Tensor& v,
                            double scale, Tensor& out, Tensor& lse, RingStats* ring_stats) {
  constexpr std::string_view op = "ring_attention_forward";
  const RingShape s = ring_shape(op, group, q, k, v);
  check_tensor(op, group, "out", out, s.q_shape(), s.dtype);
  check_tensor(op, group, "lse", lse, s.lse_shape(), ops::stats_dtype(s.dtype));
  const int sp = group.size(), rank = group.rank();
  const int64_t c = s.chunk;
  const std::array<int64_t, 2> q_pos = zigzag_offsets(rank, sp, c);

  const std::array<Tensor, 2> q_chunk = split_chunks(q, 1);  // each [batch, c, n_heads, head_dim]
  std::array<Tensor, 2> out_chunk, lse_chunk;  // merged so far: [batch, c, n_heads, head_dim],
                                               // [batch, n_heads, c]
  const Shape chunk_q_shape{s.batch, c, s.n_heads, s.head_dim};
  const Shape chunk_lse_shape{s.batch, s.n_heads, c};
  const DType stats = ops::stats_dtype(s.dtype);
  for (size_t h = 0; h < 2; ++h) {
    out_chunk[h] = Tensor::empty(chunk_q_shape, s.dtype, allocator_of(q));
    lse_chunk[h] = Tensor::empty(chunk_lse_shape, stats, allocator_of(q));
  }
  Tensor part_out = Tensor::empty(chunk_q_shape, s.dtype, allocator_of(q));  // one pair's partial result
  Tensor part_lse = Tensor::empty(chunk_lse_shape, stats, allocator_of(q));
  // Each query chunk's first partial is written in place of the merge from (0, -inf). Every chunk
  // has one at step 0, its diagonal pair.
  std::array<bool, 2> started{false, false};

  Tensor block = pack_block(k, v, c);  // the block attended this step: [4, batch, c, kv, hd]
  Tensor incoming = sp > 1 ? Tensor::empty(block.shape(), s.dtype, allocator_of(q)) : Tensor();
  for (int step = 0; step < sp; ++step) {
    CommHandle transfer;
    if (step + 1 < sp)
      transfer = start_transfer(group, block, incoming, ring_stats);
    const int owner = (rank - step + sp) % sp;
    const std::array<int64_t, 2> k_pos = zigzag_offsets(owner, sp, c);
    for (size_t a = 0; a < 2; ++a) {
      for (size_t b = 0; b < 2; ++b) {
        if (hidden(q_pos[a], k_pos[b], c)) continue;
        const ops::AttentionArgs args{true, q_pos[a], k_pos[b], scale};
        const Tensor k_b = slot(block, kKeySlot + static_cast<int>(b));
        const Tensor v_b = slot(block, kValueSlot + static_cast<int>(b));
        if (!started[a]) {
          ops::attention_forward(q_chunk[a], k_b, v_b, args, out_chunk[a], lse_chunk[a]);
          started[a] = true;
        } else {
          ops::attention_forward(q_chunk[a], k_b, v_b, args, part_out, part_lse);
          ops::attention_merge(out_chunk[a], lse_chunk[a], part_out, part_lse);
        }
        // MPI moves a large message only inside MPI calls: a test between two blocks lets the
        // transfer advance during this step's compute instead of all of it in the wait.
        transfer.is_done();
      }
    }
    if (step + 1 < sp) {
      timed_wait(transfer, ring_stats);
      std::swap(block, incoming);
    }
  }
  join_chunks(out_chunk, 1, out);
  join_chunks(lse_chunk, 2, lse);
}

// Backward, with p, D and ds as in kernels/cpu/attention.h: every (q chunk, k chunk) pair's
// gradients follow from the final (merged) out and lse alone, so the pairs are independent and
// their contributions add.
//   dq of a local query chunk = sum over all visible key chunks of the pair's dq: local, summed
//     over the steps.
//   dk, dv of a key chunk = sum over every rank's visible query chunks: each rank adds its
//     queries' share into a gradient buffer that follows the block around the ring.
// The block moves before the compute (as in the forward); its gradient buffer moves after it, one
// step behind: at step i rank r holds the block of owner o = r - i and, from rank r - 1, the
// gradient summed over ranks o .. r - 1 (nothing at step 0); it adds its own share and sends the
// sum to r + 1, whose step i + 1 block is the same block. After step sp - 1 the sum covers ranks
// o .. o + sp - 1, all of them, and the send from rank o + sp - 1 goes to o + sp = o: the owner.
// That is sp transfers of the gradient (the last one is waited on after the loop) against sp - 1
// of the block, each gradient transfer overlapping the next step's compute.
void ring_attention_backward(Communicator& group, const Tensor& dout, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             double scale, Tensor& dq, Tensor& dk, Tensor& dv,
                             RingStats* ring_stats) {
  constexpr std::string_view op = "ring_attention_backward";
  const RingShape s = ring_shape(op, group, q, k, v);
  check_tensor(op, group, "dout", dout, s.q_shape(), s.dtype);
  check_tensor(op, group, "out", out, s.q_shape(), s.dtype);
  check_tensor(op, group, "lse", lse, s.lse_shape(), ops::stats_dtype(s.dtype));
  check_tensor(op, group, "dq", dq, s.q_shape(), s.dtype);
  check_tensor(op, group, "dk", dk, s.kv_shape(), s.dtype);
  check_tensor(op, group, "dv", dv, s.kv_shape(), s.dtype);
  const int sp = group.size(), rank = group.rank();
  const int64_t c = s.chunk;
  const std::array<int64_t, 2> q_pos = zigzag_offsets(rank, sp, c);

  // Per local query chunk: [batch, c, n_heads, head_dim], lse [batch, n_heads, c].
  const std::array<Tensor, 2> q_chunk = split_chunks(q, 1), dout_chunk = split_chunks(dout, 1);
  const std::array<Tensor, 2> out_chunk = split_chunks(out, 1), lse_chunk = split_chunks(lse, 2);
  const Shape chunk_q_shape{s.batch, c, s.n_heads, s.head_dim};
  const Shape chunk_kv_shape{s.batch, c, s.n_kv_heads, s.head_dim};
  std::array<Tensor, 2> dq_chunk{Tensor::empty(chunk_q_shape, s.dtype, allocator_of(q)),
                                 Tensor::empty(chunk_q_shape, s.dtype, allocator_of(q))};
  std::array<bool, 2> dq_written{false, false};  // both become true at step 0 (diagonal pairs)
  // A pair whose target already holds a contribution writes here and is added in.
  const Tensor pair_dq = Tensor::empty(chunk_q_shape, s.dtype, allocator_of(q));
  const Tensor pair_dk = Tensor::empty(chunk_kv_shape, s.dtype, allocator_of(q));
  const Tensor pair_dv = Tensor::empty(chunk_kv_shape, s.dtype, allocator_of(q));

  Tensor block = pack_block(k, v, c);  // [4, batch, c, n_kv_heads, head_dim]: k0, k1, v0, v1
  Tensor incoming = sp > 1 ? Tensor::empty(block.shape(), s.dtype, allocator_of(q)) : Tensor();
  // Gradient buffers of the same layout (dk0, dk1, dv0, dv1): this step's own share, the sum sent
  // on (or, at sp = 1, kept), and the sum arriving from the previous rank.
  Tensor grad_step = Tensor::empty(block.shape(), s.dtype, allocator_of(q));
  Tensor grad_out = Tensor::empty(block.shape(), s.dtype, allocator_of(q));
  Tensor grad_in = sp > 1 ? Tensor::empty(block.shape(), s.dtype, allocator_of(q)) : Tensor();
  CommHandle grad_transfer;

  for (int step = 0; step < sp; ++step) {
    CommHandle transfer;
    if (step + 1 < sp)
      transfer = start_transfer(group, block, incoming, ring_stats);
    const int owner = (rank - step + sp) % sp;
    const std::array<int64_t, 2> k_pos = zigzag_offsets(owner, sp, c);
    std::array<bool, 2> grad_written{false, false};  // per key chunk of the block
    for (size_t a = 0; a < 2; ++a) {
      for (size_t b = 0; b < 2; ++b) {
        if (hidden(q_pos[a], k_pos[b], c)) continue;
        const ops::AttentionArgs args{true, q_pos[a], k_pos[b], scale};
        const int kb = static_cast<int>(b);
        Tensor dk_step = slot(grad_step, kKeySlot + kb), dv_step = slot(grad_step, kValueSlot + kb);
        Tensor dq_target = dq_written[a] ? pair_dq : dq_chunk[a];
        Tensor dk_target = grad_written[b] ? pair_dk : dk_step;
        Tensor dv_target = grad_written[b] ? pair_dv : dv_step;
        ops::attention_backward(dout_chunk[a], q_chunk[a], slot(block, kKeySlot + kb),
                                slot(block, kValueSlot + kb), out_chunk[a], lse_chunk[a], args,
                                dq_target, dk_target, dv_target);
        if (dq_written[a]) ops::axpy(1.0, pair_dq, dq_chunk[a]);
        if (grad_written[b]) {
          ops::axpy(1.0, pair_dk, dk_step);
          ops::axpy(1.0, pair_dv, dv_step);
        }
        dq_written[a] = true;
        grad_written[b] = true;
        transfer.is_done();  // drive both transfers' progress between blocks (see the forward)
        grad_transfer.is_done();
      }
    }

    if (step == 0) {
      // The block's first share starts the sum. Under the zigzag split both key chunks of one's own
      // block are seen at step 0 (q_late sees k_r and k_late); a chunk no query saw would add zero.
      std::swap(grad_out, grad_step);
      for (int b = 0; b < 2; ++b) {
        if (grad_written[static_cast<size_t>(b)]) continue;
        Tensor dk_zero = slot(grad_out, kKeySlot + b), dv_zero = slot(grad_out, kValueSlot + b);
        fill(dk_zero, 0.0);
        fill(dv_zero, 0.0);
      }
    } else {
      timed_wait(grad_transfer, ring_stats);  // grad_in: this block's sum over the ranks before this one
      for (int b = 0; b < 2; ++b) {
        if (!grad_written[static_cast<size_t>(b)]) continue;
        Tensor dk_sum = slot(grad_in, kKeySlot + b), dv_sum = slot(grad_in, kValueSlot + b);
        ops::axpy(1.0, slot(grad_step, kKeySlot + b), dk_sum);
        ops::axpy(1.0, slot(grad_step, kValueSlot + b), dv_sum);
      }
      std::swap(grad_out, grad_in);  // grad_in is now the buffer whose send has completed
    }
    if (step + 1 < sp) {
      timed_wait(transfer, ring_stats);
      std::swap(block, incoming);
    }
    if (sp > 1)
      grad_transfer = start_transfer(group, grad_out, grad_in, ring_stats);
  }
  // With one rank the sum never left; otherwise the last transfer brings this rank's own block's
  // sum home.
  if (sp > 1) timed_wait(grad_transfer, ring_stats);
  const Tensor& grad_home = sp > 1 ? grad_in : grad_out;

  join_chunks(dq_chunk, 1, dq);
  unpack_block(grad_home, dk, dv);
}

}  // namespace strata

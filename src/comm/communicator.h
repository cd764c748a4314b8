// Communicator: collectives and point-to-point transfers over the ranks of one group ("world",
// "tp", "dp", ...), on Tensors. Two backends implement it: MpiCommunicator (CPU tensors, and CUDA
// tensors staged through pinned host memory) and NcclCommunicator (CUDA tensors, one GPU a rank).
//
// The public methods are not virtual: they check the arguments (defined, contiguous, matching
// dtypes/devices/sizes), optionally check across ranks that every rank passes the same sizes, and
// only then hand the call to the backend's start_* hook. Every error they throw names the
// operation, the group, this rank and the group size.
//
// Semantics (n = elements per rank, p = size()):
//   all_reduce      x: [n] in place                     x = op over ranks of x
//   reduce_scatter  in: [p*n] -> out: [n]               out = slice `rank` of (op over ranks of in)
//   all_gather      in: [n] -> out: [p*n]               out = concat(in of rank 0, ..., rank p-1)
//   broadcast       x: [n] in place                     x = x of `root`
//   all_to_all      in: [sum send_counts] -> out: [sum recv_counts]; the block for peer j starts at
//                   the prefix sum of the counts before j (in elements)
// In-place forms: all_gather with `in` the rank's slot of `out` (out.slice(0, rank*n, (rank+1)*n)),
// reduce_scatter with `out` the rank's slot of `in`. Any other overlap of in and out is refused.
// Shapes do not matter, only element counts: a [4, 8] tensor all-gathers into any [p*32] tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace strata {

enum class ReduceOp : uint8_t { sum, avg, max };
std::string_view reduce_op_name(ReduceOp op);

// A communication in flight. wait() blocks until its results are in the output tensors (and, for
// CUDA tensors, on the device); is_done() asks without blocking (and drives MPI's progress). The
// handle keeps the tensors it touches alive. A handle that is destroyed before completion waits,
// because the memory it reads or writes may be freed right after; a failure seen there stops all
// ranks (STYLE habit 15), since a destructor cannot report it. A default handle is already done.
class CommHandle {
 public:
  // What a backend puts behind a handle.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual bool test() = 0;  // true once complete; finishing work (copy-back, avg) is then done
    virtual void wait() = 0;
  };

  CommHandle() = default;
  // `context` ("all_reduce on group 'dp' (rank 1 of 2 ranks)") prefixes any error from wait().
  CommHandle(std::unique_ptr<Pending> pending, std::string context);
  CommHandle(CommHandle&& other) noexcept = default;
  CommHandle& operator=(CommHandle&& other) noexcept;
  CommHandle(const CommHandle&) = delete;
  CommHandle& operator=(const CommHandle&) = delete;
  ~CommHandle();

  void wait();
  bool is_done();

 private:
  void finish_or_abort() noexcept;
  std::unique_ptr<Pending> pending_;
  std::string context_;
};

class Communicator {
 public:
  Communicator(std::string name, int rank, int size);
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const std::string& name() const { return name_; }  // the group: "world", "tp", "dp", ...
  int rank() const { return rank_; }                 // this process's index in the group
  int size() const { return size_; }
  virtual std::string_view backend() const = 0;  // "mpi", "nccl"
  // "group 'dp' (rank 1 of 2 ranks)": the context every error carries.
  std::string where() const;

  // Cross-rank size check (on by default): before each collective, one small all-gather of
  // (element count, dtype, op or root) so that ranks disagreeing throw the same Error on every rank
  // instead of hanging or reading garbage. It is a blocking exchange even for the *_async calls;
  // turn it off in hot loops whose sizes are known to agree.
  bool checks_sizes() const { return check_sizes_; }
  void set_check_sizes(bool on) { check_sizes_ = on; }

  void all_reduce(Tensor& x, ReduceOp op = ReduceOp::sum);
  CommHandle all_reduce_async(Tensor& x, ReduceOp op = ReduceOp::sum);

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::sum);
  CommHandle reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::sum);

  void all_gather(const Tensor& in, Tensor& out);
  CommHandle all_gather_async(const Tensor& in, Tensor& out);

  void broadcast(Tensor& x, int root);
  CommHandle broadcast_async(Tensor& x, int root);

  // Point to point: messages between two ranks arrive in the order they were sent. The receiver
  // must pass a tensor of exactly the sent element count and dtype. A blocking send or recv to
  // oneself is refused (it would deadlock); the async forms may pair with themselves.
  void send(const Tensor& x, int peer);
  void recv(Tensor& x, int peer);
  CommHandle send_async(const Tensor& x, int peer);
  CommHandle recv_async(Tensor& x, int peer);

  // Sends `send` to rank `to` and receives `recv` from rank `from` as one exchange: a ring step
  // (every rank sends to its next and receives from its previous) or a pairwise swap. Use it
  // wherever every rank both sends and receives: on NCCL, separate send and recv calls each wait
  // for their peer, so a ring of them deadlocks. `to` and `from` may be this rank.
  void send_recv(const Tensor& send, int to, Tensor& recv, int from);
  CommHandle send_recv_async(const Tensor& send, int to, Tensor& recv, int from);

  // Uneven all-to-all: send_counts[j] elements go to rank j, recv_counts[j] come from rank j; the
  // counts must pair up across ranks (rank i's send_counts[j] == rank j's recv_counts[i]), which
  // the size check verifies.
  void all_to_all(const Tensor& in, std::span<const int64_t> send_counts, Tensor& out,
                  std::span<const int64_t> recv_counts);
  CommHandle all_to_all_async(const Tensor& in, std::span<const int64_t> send_counts, Tensor& out,
                              std::span<const int64_t> recv_counts);

  void barrier();

 protected:
  // How a start_* hook runs: `blocking` completes the operation before returning (and returns a
  // default, done handle); `async` returns a handle to the operation in flight.
  enum class Mode { blocking, async };

  // Backend hooks, called with arguments already checked: tensors defined and contiguous, dtypes
  // and devices matching, element counts consistent (and agreeing across ranks when checked),
  // in-place forms recognised (`in` and `out` share memory exactly as described above).
  virtual CommHandle start_all_reduce(const Tensor& x, ReduceOp op, Mode mode) = 0;
  virtual CommHandle start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op,
                                          Mode mode) = 0;
  virtual CommHandle start_all_gather(const Tensor& in, const Tensor& out, Mode mode) = 0;
  virtual CommHandle start_broadcast(const Tensor& x, int root, Mode mode) = 0;
  virtual CommHandle start_send(const Tensor& x, int peer, Mode mode) = 0;
  virtual CommHandle start_recv(const Tensor& x, int peer, Mode mode) = 0;
  virtual CommHandle start_send_recv(const Tensor& send, int to, const Tensor& recv, int from,
                                     Mode mode) = 0;
  virtual CommHandle start_all_to_all(const Tensor& in, std::span<const int64_t> send_counts,
                                      const Tensor& out, std::span<const int64_t> recv_counts,
                                      Mode mode) = 0;
  virtual void do_barrier() = 0;
  // Host-side all-gather of a few integers (every rank passes the same count k; the result holds
  // size()*k values, rank-ordered). Used by the size checks; blocking.
  virtual std::vector<int64_t> exchange_host(std::span<const int64_t> mine) = 0;

  // "all_reduce on group 'dp' (rank 1 of 2 ranks)"
  std::string context(std::string_view op) const;

 private:
  // What a reduction's extra argument is, for the agreement check's message.
  enum class Arg { none, reduce_op, root };
  // The cross-rank checks. `local_error` is this rank's argument-check failure (empty when its
  // arguments are fine): with checking on, it travels with the record, so a bad argument on one
  // rank throws on every rank instead of leaving the others waiting. With checking off (or one
  // rank), a local error is thrown here and nothing is exchanged.
  void agree_on(const std::string& local_error, int64_t count, DType dtype, int64_t arg, Arg kind);
  void agree_on_all_to_all(const std::string& local_error, std::span<const int64_t> send_counts,
                           std::span<const int64_t> recv_counts, DType dtype);
  // Exchanges [ok, record...]; throws when any rank's local checks failed; returns all records
  // (rank-ordered, stride record.size() + 1, the ok flag first), or nothing when not checking.
  std::vector<int64_t> exchange_checked(const std::string& local_error,
                                        std::vector<int64_t> record);
  CommHandle all_reduce_impl(Tensor& x, ReduceOp op, Mode mode);
  CommHandle reduce_scatter_impl(const Tensor& in, Tensor& out, ReduceOp op, Mode mode);
  CommHandle all_gather_impl(const Tensor& in, Tensor& out, Mode mode);
  CommHandle broadcast_impl(Tensor& x, int root, Mode mode);
  CommHandle send_impl(const Tensor& x, int peer, Mode mode);
  CommHandle recv_impl(Tensor& x, int peer, Mode mode);
  CommHandle send_recv_impl(const Tensor& send, int to, Tensor& recv, int from, Mode mode);
  CommHandle all_to_all_impl(const Tensor& in, std::span<const int64_t> send_counts, Tensor& out,
                             std::span<const int64_t> recv_counts, Mode mode);

  std::string name_;
  int rank_;
  int size_;
  bool check_sizes_ = true;
};

namespace comm_detail {
// Lists per-rank values for an error message: "rank 0 has 1024, rank 1 has 1000"; beyond 16 ranks
// only the ranks that differ from rank 0 are named.
std::string describe_per_rank(const std::vector<std::string>& values);
// Whether the byte ranges [a, a+a_bytes) and [b, b+b_bytes) overlap.
bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes);
}  // namespace comm_detail

}  // namespace strata

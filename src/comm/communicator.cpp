#include "comm/communicator.h"

#include "comm/watchdog.h"

#include <cstdint>
#include <utility>

#include "comm/mpi_session.h"

namespace strata {

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  STRATA_FAIL("unknown reduce op code ", static_cast<int>(op));
}

// ---- CommHandle ----

CommHandle::CommHandle(std::unique_ptr<Pending> pending, std::string context)
    : pending_(std::move(pending)), context_(std::move(context)) {}

CommHandle& CommHandle::operator=(CommHandle&& other) noexcept {
  if (this != &other) {
    finish_or_abort();
    pending_ = std::move(other.pending_);
    context_ = std::move(other.context_);
  }
  return *this;
}

CommHandle::~CommHandle() {
  finish_or_abort();
}

void CommHandle::finish_or_abort() noexcept {
  if (!pending_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    abort_all_ranks(
        detail::concat("a communication handle destroyed before wait() failed: ", e.what()));
  }
}

void CommHandle::wait() {
  if (!pending_) return;
  const WatchdogScope watched(context_);
  try {
    pending_->wait();
  } catch (const Error& e) {
    pending_.reset();
    throw Error(detail::concat(context_, ": ", e.what()));
  }
  pending_.reset();
}

bool CommHandle::is_done() {
  if (!pending_) return true;
  bool done = false;
  try {
    done = pending_->test();
  } catch (const Error& e) {
    pending_.reset();
    throw Error(detail::concat(context_, ": ", e.what()));
  }
  if (done) pending_.reset();
  return done;
}

// ---- helpers ----

namespace comm_detail {

std::string describe_per_rank(const std::vector<std::string>& values) {
  constexpr size_t kListAll = 16;
  std::string out;
  for (size_t r = 0; r < values.size(); ++r) {
    if (values.size() > kListAll && r > 0 && values[r] == values[0]) continue;
    if (!out.empty()) out += ", ";
    out += detail::concat("rank ", r, " has ", values[r]);
  }
  if (values.size() > kListAll) out += " (ranks not named have rank 0's value)";
  return out;
}

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  auto a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

}  // namespace comm_detail

namespace {

void check_tensor(const Tensor& t, const char* what) {
  STRATA_CHECK(t.defined(), what, " is an undefined tensor");
  STRATA_CHECK(t.is_contiguous(), what, " must be contiguous, got ", t.describe(), " with strides ",
               shape_string(t.strides()));
}

void check_same_kind(const Tensor& in, const Tensor& out) {
  STRATA_CHECK(in.dtype() == out.dtype() && in.device() == out.device(), "in ", in.describe(),
               " and out ", out.describe(), " differ in dtype or device");
}

void check_reducible(DType dtype, ReduceOp op) {
  STRATA_CHECK(op != ReduceOp::avg || is_floating(dtype),
               "reduce op avg needs a floating dtype, got ", dtype_name(dtype),
               " (sum, then divide where the rounding is yours to choose)");
}

void check_in_out(const Tensor& in, const Tensor& out) {
  check_tensor(in, "in");
  check_tensor(out, "out");
  check_same_kind(in, out);
}

void check_peer(int peer, const char* what, int size) {
  STRATA_CHECK(peer >= 0 && peer < size, what, " ", peer, " is not a rank of the group");
}

// In-place forms: `out` is this rank's slot of `in` (reduce_scatter, slot_is_out) or `in` is this
// rank's slot of `out` (all_gather). Any other overlap would have MPI/NCCL read what they write.
void check_in_place(const Tensor& in, const Tensor& out, bool slot_is_out, int rank) {
  if (!comm_detail::overlaps(in.raw(), in.nbytes(), out.raw(), out.nbytes())) return;
  const Tensor& whole = slot_is_out ? in : out;
  const Tensor& slot = slot_is_out ? out : in;
  STRATA_CHECK(
      static_cast<const char*>(slot.raw()) ==
          static_cast<const char*>(whole.raw()) + rank * static_cast<int64_t>(slot.nbytes()),
      slot_is_out ? "out" : "in", " overlaps ", slot_is_out ? "in" : "out",
      " but is not this rank's slot of it (the in-place form)");
}

void check_all_to_all_counts(const Tensor& in, std::span<const int64_t> send_counts,
                             const Tensor& out, std::span<const int64_t> recv_counts, int size) {
  const size_t p = static_cast<size_t>(size);
  STRATA_CHECK(send_counts.size() == p && recv_counts.size() == p, "send_counts (",
               send_counts.size(), " entries) and recv_counts (", recv_counts.size(),
               " entries) need one entry per rank (", p, ")");
  int64_t send_total = 0, recv_total = 0;
  for (size_t j = 0; j < p; ++j) {
    STRATA_CHECK(send_counts[j] >= 0 && recv_counts[j] >= 0, "negative count for rank ", j,
                 ": send ", send_counts[j], ", recv ", recv_counts[j]);
    send_total += send_counts[j];
    recv_total += recv_counts[j];
  }
  STRATA_CHECK(send_total == in.numel(), "send_counts add up to ", send_total,
               " elements but in is ", in.describe());
  STRATA_CHECK(recv_total == out.numel(), "recv_counts add up to ", recv_total,
               " elements but out is ", out.describe());
}

// This rank's argument-check failure, or "" when its arguments are fine.
template <typename F>
std::string local_error(F&& checks) {
  try {
    checks();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

// Runs a public operation's body; any Error leaves with "<op> on group 'g' (rank r of p ranks): "
// in front, so no message from below has to know where it was called from.
template <typename F>
auto with_context(const std::string& context, F&& body) -> decltype(body()) {
  const WatchdogScope watched(context);
  try {
    return body();
  } catch (const Error& e) {
    throw Error(detail::concat(context, ": ", e.what()));
  }
}

}  // namespace

// ---- Communicator ----

Communicator::Communicator(std::string name, int rank, int size)
    : name_(std::move(name)), rank_(rank), size_(size) {
  STRATA_CHECK(size >= 1 && rank >= 0 && rank < size, "communicator '", name_, "': rank ", rank,
               " is not in a group of ", size);
}

std::string Communicator::where() const {
  return detail::concat("group '", name_, "' (rank ", rank_, " of ", size_, " ranks)");
}

std::string Communicator::context(std::string_view op) const {
  return detail::concat(op, " on ", where());
}

std::vector<int64_t> Communicator::exchange_checked(const std::string& local_error,
                                                    std::vector<int64_t> record) {
  if (!check_sizes_ || size_ == 1) {
    if (!local_error.empty()) throw Error(local_error);
    return {};
  }
  record.insert(record.begin(), local_error.empty() ? 1 : 0);
  std::vector<int64_t> all = exchange_host(record);
  if (!local_error.empty()) throw Error(local_error);
  std::string bad;
  for (size_t r = 0; r < static_cast<size_t>(size_); ++r) {
    if (all[r * record.size()] == 0) bad += detail::concat(bad.empty() ? "" : ", ", r);
  }
  STRATA_CHECK(bad.empty(), "invalid arguments on rank(s) ", bad, " (each reports its own error)");
  return all;
}

void Communicator::agree_on(const std::string& local_error, int64_t count, DType dtype, int64_t arg,
                            Arg kind) {
  std::vector<int64_t> all =
      exchange_checked(local_error, {count, static_cast<int64_t>(dtype), arg});
  if (all.empty()) return;
  // Record of rank r: [ok, count, dtype, arg].
  auto field = [&](int r, int f) { return all[static_cast<size_t>(r * 4 + f)]; };
  auto differs = [&](int f) {
    for (int r = 1; r < size_; ++r)
      if (field(r, f) != field(0, f)) return true;
    return false;
  };
  auto per_rank = [&](int f, auto&& format) {
    std::vector<std::string> values;
    for (int r = 0; r < size_; ++r) values.push_back(format(field(r, f)));
    return comm_detail::describe_per_rank(values);
  };
  if (differs(1)) {
    STRATA_FAIL("element counts differ across ranks: ",
                per_rank(1, [](int64_t v) { return std::to_string(v); }));
  }
  if (differs(2)) {
    STRATA_FAIL("dtypes differ across ranks: ", per_rank(2, [](int64_t v) {
                  return std::string(dtype_name(static_cast<DType>(v)));
                }));
  }
  if (kind != Arg::none && differs(3)) {
    STRATA_FAIL(kind == Arg::root ? "roots" : "reduce ops",
                " differ across ranks: ", per_rank(3, [&](int64_t v) {
                  return kind == Arg::root ? std::to_string(v)
                                           : std::string(reduce_op_name(static_cast<ReduceOp>(v)));
                }));
  }
}

void Communicator::agree_on_all_to_all(const std::string& local_error,
                                       std::span<const int64_t> send_counts,
                                       std::span<const int64_t> recv_counts, DType dtype) {
  // Record: [dtype, send_counts (p), recv_counts (p)], padded when a rank passed the wrong number
  // of counts (its local error then stops everyone before the counts are read).
  const size_t p = static_cast<size_t>(size_);
  std::vector<int64_t> record(2 * p + 1, 0);
  record[0] = static_cast<int64_t>(dtype);
  for (size_t j = 0; j < p && j < send_counts.size(); ++j) record[1 + j] = send_counts[j];
  for (size_t j = 0; j < p && j < recv_counts.size(); ++j) record[1 + p + j] = recv_counts[j];
  std::vector<int64_t> all = exchange_checked(local_error, record);
  if (all.empty()) return;
  // Every rank sees the whole matrix, so every rank finds (and reports) the same mismatches.
  const size_t stride = 2 * p + 2;
  std::vector<std::string> dtypes;
  bool dtypes_differ = false;
  for (size_t r = 0; r < p; ++r) {
    dtypes.emplace_back(dtype_name(static_cast<DType>(all[r * stride + 1])));
    dtypes_differ = dtypes_differ || dtypes[r] != dtypes[0];
  }
  STRATA_CHECK(!dtypes_differ,
               "dtypes differ across ranks: ", comm_detail::describe_per_rank(dtypes));
  std::string mismatches;
  int n_mismatches = 0;
  for (size_t i = 0; i < p; ++i) {
    for (size_t j = 0; j < p; ++j) {
      const int64_t sent = all[i * stride + 2 + j], expected = all[j * stride + 2 + p + i];
      if (sent == expected) continue;
      if (++n_mismatches <= 8) {
        mismatches += detail::concat(mismatches.empty() ? "" : "; ", "rank ", i, " sends ", sent,
                                     " elements to rank ", j, ", which expects ", expected);
      }
    }
  }
  STRATA_CHECK(n_mismatches == 0, "send and receive counts do not pair up across ranks (",
               n_mismatches, " pairs): ", mismatches, n_mismatches > 8 ? "; ..." : "");
}

// ---- the operations: argument checks (local, then across ranks), then the backend ----

CommHandle Communicator::all_reduce_impl(Tensor& x, ReduceOp op, Mode mode) {
  return with_context(context("all_reduce"), [&] {
    agree_on(local_error([&] {
               check_tensor(x, "x");
               check_reducible(x.dtype(), op);
             }),
             x.numel(), x.dtype(), static_cast<int64_t>(op), Arg::reduce_op);
    return start_all_reduce(x, op, mode);
  });
}

CommHandle Communicator::reduce_scatter_impl(const Tensor& in, Tensor& out, ReduceOp op,
                                             Mode mode) {
  return with_context(context("reduce_scatter"), [&] {
    agree_on(local_error([&] {
               check_in_out(in, out);
               check_reducible(in.dtype(), op);
               STRATA_CHECK(in.numel() == out.numel() * size_, "in ", in.describe(),
                            " must hold size (", size_, ") times the elements of out ",
                            out.describe());
               check_in_place(in, out, /*slot_is_out=*/true, rank_);
             }),
             in.numel(), in.dtype(), static_cast<int64_t>(op), Arg::reduce_op);
    return start_reduce_scatter(in, out, op, mode);
  });
}

CommHandle Communicator::all_gather_impl(const Tensor& in, Tensor& out, Mode mode) {
  return with_context(context("all_gather"), [&] {
    agree_on(local_error([&] {
               check_in_out(in, out);
               STRATA_CHECK(out.numel() == in.numel() * size_, "out ", out.describe(),
                            " must hold size (", size_, ") times the elements of in ",
                            in.describe());
               check_in_place(in, out, /*slot_is_out=*/false, rank_);
             }),
             in.numel(), in.dtype(), 0, Arg::none);
    return start_all_gather(in, out, mode);
  });
}

CommHandle Communicator::broadcast_impl(Tensor& x, int root, Mode mode) {
  return with_context(context("broadcast"), [&] {
    agree_on(local_error([&] {
               check_tensor(x, "x");
               STRATA_CHECK(root >= 0 && root < size_, "root ", root,
                            " is not a rank of the group");
             }),
             x.numel(), x.dtype(), root, Arg::root);
    return start_broadcast(x, root, mode);
  });
}

// Point to point has no collective to piggyback a check on: errors are local (and the receiver
// checks the count it got).
CommHandle Communicator::send_impl(const Tensor& x, int peer, Mode mode) {
  return with_context(context("send"), [&] {
    check_tensor(x, "x");
    check_peer(peer, "peer", size_);
    STRATA_CHECK(mode == Mode::async || peer != rank_,
                 "a blocking send to oneself would deadlock; use send_recv or the async forms");
    return start_send(x, peer, mode);
  });
}

CommHandle Communicator::recv_impl(Tensor& x, int peer, Mode mode) {
  return with_context(context("recv"), [&] {
    check_tensor(x, "x");
    check_peer(peer, "peer", size_);
    STRATA_CHECK(mode == Mode::async || peer != rank_,
                 "a blocking recv from oneself would deadlock; use send_recv or the async forms");
    return start_recv(x, peer, mode);
  });
}

CommHandle Communicator::send_recv_impl(const Tensor& send, int to, Tensor& recv, int from,
                                        Mode mode) {
  return with_context(context("send_recv"), [&] {
    check_tensor(send, "send");
    check_tensor(recv, "recv");
    check_peer(to, "to", size_);
    check_peer(from, "from", size_);
    STRATA_CHECK(!comm_detail::overlaps(send.raw(), send.nbytes(), recv.raw(), recv.nbytes()),
                 "send and recv overlap");
    return start_send_recv(send, to, recv, from, mode);
  });
}

CommHandle Communicator::all_to_all_impl(const Tensor& in, std::span<const int64_t> send_counts,
                                         Tensor& out, std::span<const int64_t> recv_counts,
                                         Mode mode) {
  return with_context(context("all_to_all"), [&] {
    agree_on_all_to_all(
        local_error([&] {
          check_in_out(in, out);
          check_all_to_all_counts(in, send_counts, out, recv_counts, size_);
          STRATA_CHECK(!comm_detail::overlaps(in.raw(), in.nbytes(), out.raw(), out.nbytes()),
                       "in and out overlap (all_to_all has no in-place form)");
        }),
        send_counts, recv_counts, in.dtype());
    return start_all_to_all(in, send_counts, out, recv_counts, mode);
  });
}

void Communicator::all_reduce(Tensor& x, ReduceOp op) {
  all_reduce_impl(x, op, Mode::blocking);
}
CommHandle Communicator::all_reduce_async(Tensor& x, ReduceOp op) {
  return all_reduce_impl(x, op, Mode::async);
}

void Communicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  reduce_scatter_impl(in, out, op, Mode::blocking);
}
CommHandle Communicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  return reduce_scatter_impl(in, out, op, Mode::async);
}

void Communicator::all_gather(const Tensor& in, Tensor& out) {
  all_gather_impl(in, out, Mode::blocking);
}
CommHandle Communicator::all_gather_async(const Tensor& in, Tensor& out) {
  return all_gather_impl(in, out, Mode::async);
}

void Communicator::broadcast(Tensor& x, int root) {
  broadcast_impl(x, root, Mode::blocking);
}
CommHandle Communicator::broadcast_async(Tensor& x, int root) {
  return broadcast_impl(x, root, Mode::async);
}

void Communicator::send(const Tensor& x, int peer) {
  send_impl(x, peer, Mode::blocking);
}
void Communicator::recv(Tensor& x, int peer) {
  recv_impl(x, peer, Mode::blocking);
}
CommHandle Communicator::send_async(const Tensor& x, int peer) {
  return send_impl(x, peer, Mode::async);
}
CommHandle Communicator::recv_async(Tensor& x, int peer) {
  return recv_impl(x, peer, Mode::async);
}

void Communicator::send_recv(const Tensor& send, int to, Tensor& recv, int from) {
  send_recv_impl(send, to, recv, from, Mode::blocking);
}
CommHandle Communicator::send_recv_async(const Tensor& send, int to, Tensor& recv, int from) {
  return send_recv_impl(send, to, recv, from, Mode::async);
}

void Communicator::all_to_all(const Tensor& in, std::span<const int64_t> send_counts, Tensor& out,
                              std::span<const int64_t> recv_counts) {
  all_to_all_impl(in, send_counts, out, recv_counts, Mode::blocking);
}
CommHandle Communicator::all_to_all_async(const Tensor& in, std::span<const int64_t> send_counts,
                                          Tensor& out, std::span<const int64_t> recv_counts) {
  return all_to_all_impl(in, send_counts, out, recv_counts, Mode::async);
}

void Communicator::barrier() {
  with_context(context("barrier"), [&] { do_barrier(); });
}

}  // namespace strata

#include "comm/mpi_communicator.h"

#include <functional>
#include <vector>

namespace strata {

namespace {

// One tag for all point-to-point traffic: MPI keeps messages between two ranks of a communicator
// in order, and the communicator is private, so nothing else can match them.
constexpr int kTag = 0;

// Everything one MPI operation needs until it completes: its requests and statuses, the host
// buffers (staged or scratch) and the tensors behind them, the counts arrays of a v-collective,
// and what to do on completion (divide for avg, check a received count, copy back).
class MpiPending final : public CommHandle::Pending {
 public:
  explicit MpiPending(std::shared_ptr<PinnedPool> pool) : stage(std::move(pool)) {}

  // A new request slot (pointers into `requests` last until the next call).
  MPI_Request* new_request() {
    requests.push_back(MPI_REQUEST_NULL);
    statuses.emplace_back();
    return &requests.back();
  }

  bool test() override {
    if (finished_) return true;
    int done = 0;
    STRATA_MPI_CHECK(
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, statuses.data()));
    if (done) finish();
    return done != 0;
  }

  void wait() override {
    if (finished_) return;
    STRATA_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests.size()), requests.data(), statuses.data()));
    finish();
  }

  // After the MPI operation completed (blocking calls call this directly).
  void finish() {
    finished_ = true;
    if (after) after();
    stage.finish();
  }

  HostStage stage;
  std::vector<MPI_Request> requests;
  std::vector<MPI_Status> statuses;
  std::vector<int> counts;  // counts and displacements of MPI_Ialltoallv, alive until completion
  std::function<void()> after;

 private:
  bool finished_ = false;
};

// The received element count must be the one the receiver expected.
void check_received(const MPI_Status& status, MPI_Datatype type, int expected, int peer) {
  int received = 0;
  STRATA_MPI_CHECK(MPI_Get_count(&status, type, &received));
  STRATA_CHECK(received == expected, "received ", received, " elements from rank ", peer,
               " into a tensor of ", expected, " elements");
}

}  // namespace

MpiCommunicator::MpiCommunicator(std::string name, MPI_Comm comm)
    : Communicator(std::move(name), mpi_comm_rank(comm), mpi_comm_size(comm)) {
  STRATA_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  STRATA_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

// A handle for work in flight, or (blocking) the work finished here and a done handle.
#define STRATA_MPI_START(blocking_call, async_call, op_name) \
  do {                                                       \
    if (mode == Mode::blocking) {                            \
      STRATA_MPI_CHECK(blocking_call);                       \
      work->finish();                                        \
      return {};                                             \
    }                                                        \
    STRATA_MPI_CHECK(async_call);                            \
    return CommHandle(std::move(work), context(op_name));    \
  } while (0)

CommHandle MpiCommunicator::start_all_reduce(const Tensor& x, ReduceOp op, Mode mode) {
  if (size() == 1) return {};  // sum, avg and max of one value: the value
  auto work = std::make_unique<MpiPending>(pinned_);
  void* buf = work->stage.host(x, /*copy_in=*/true, /*copy_out=*/true);
  const int count = mpi_count(x.numel());
  const MPI_Datatype type = mpi_datatype(x.dtype());
  const MPI_Op mpi_op = ops_.get(op, x.dtype());
  if (op == ReduceOp::avg) {
    work->after = [buf, n = x.numel(), dtype = x.dtype(), p = size()] {
      divide_elements(buf, n, dtype, p);
    };
  }
  STRATA_MPI_START(
      MPI_Allreduce(MPI_IN_PLACE, buf, count, type, mpi_op, comm_),
      MPI_Iallreduce(MPI_IN_PLACE, buf, count, type, mpi_op, comm_, work->new_request()),
      "all_reduce");
}

CommHandle MpiCommunicator::start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op,
                                                 Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  // MPI's in-place reduce-scatter leaves the result at the start of the buffer, not in this rank's
  // slot, so an aliasing `out` gets a scratch buffer and is written on completion.
  const bool in_place = comm_detail::overlaps(in.raw(), in.nbytes(), out.raw(), out.nbytes());
  void* send = work->stage.host(in, /*copy_in=*/true, /*copy_out=*/false);
  void* recv =
      work->stage.host(out, /*copy_in=*/false, /*copy_out=*/true, /*private_copy=*/in_place);
  const int count = mpi_count(out.numel());
  const MPI_Datatype type = mpi_datatype(in.dtype());
  const MPI_Op mpi_op = ops_.get(op, in.dtype());
  if (op == ReduceOp::avg) {
    work->after = [recv, n = out.numel(), dtype = out.dtype(), p = size()] {
      divide_elements(recv, n, dtype, p);
    };
  }
  STRATA_MPI_START(
      MPI_Reduce_scatter_block(send, recv, count, type, mpi_op, comm_),
      MPI_Ireduce_scatter_block(send, recv, count, type, mpi_op, comm_, work->new_request()),
      "reduce_scatter");
}

CommHandle MpiCommunicator::start_all_gather(const Tensor& in, const Tensor& out, Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  const bool in_place = comm_detail::overlaps(in.raw(), in.nbytes(), out.raw(), out.nbytes());
  void* send = MPI_IN_PLACE;
  if (!in_place) send = work->stage.host(in, /*copy_in=*/true, /*copy_out=*/false);
  // In place, this rank's slot of `out` already holds its part (and is what the staging copies).
  void* recv = work->stage.host(out, /*copy_in=*/in_place, /*copy_out=*/true);
  const int count = mpi_count(in.numel());
  const MPI_Datatype type = mpi_datatype(in.dtype());
  STRATA_MPI_START(MPI_Allgather(send, count, type, recv, count, type, comm_),
                   MPI_Iallgather(send, count, type, recv, count, type, comm_, work->new_request()),
                   "all_gather");
}

CommHandle MpiCommunicator::start_broadcast(const Tensor& x, int root, Mode mode) {
  if (size() == 1) return {};
  auto work = std::make_unique<MpiPending>(pinned_);
  const bool is_root = rank() == root;
  void* buf = work->stage.host(x, /*copy_in=*/is_root, /*copy_out=*/!is_root);
  const int count = mpi_count(x.numel());
  const MPI_Datatype type = mpi_datatype(x.dtype());
  STRATA_MPI_START(MPI_Bcast(buf, count, type, root, comm_),
                   MPI_Ibcast(buf, count, type, root, comm_, work->new_request()), "broadcast");
}

CommHandle MpiCommunicator::start_send(const Tensor& x, int peer, Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  void* buf = work->stage.host(x, /*copy_in=*/true, /*copy_out=*/false);
  const int count = mpi_count(x.numel());
  const MPI_Datatype type = mpi_datatype(x.dtype());
  STRATA_MPI_START(MPI_Send(buf, count, type, peer, kTag, comm_),
                   MPI_Isend(buf, count, type, peer, kTag, comm_, work->new_request()), "send");
}

CommHandle MpiCommunicator::start_recv(const Tensor& x, int peer, Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  void* buf = work->stage.host(x, /*copy_in=*/false, /*copy_out=*/true);
  const int count = mpi_count(x.numel());
  const MPI_Datatype type = mpi_datatype(x.dtype());
  MPI_Request* request = work->new_request();
  work->after = [pending = work.get(), type, count, peer] {
    check_received(pending->statuses[0], type, count, peer);
  };
  STRATA_MPI_START(MPI_Recv(buf, count, type, peer, kTag, comm_, &work->statuses[0]),
                   MPI_Irecv(buf, count, type, peer, kTag, comm_, request), "recv");
}

CommHandle MpiCommunicator::start_send_recv(const Tensor& send, int to, const Tensor& recv,
                                            int from, Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  void* send_buf = work->stage.host(send, /*copy_in=*/true, /*copy_out=*/false);
  void* recv_buf = work->stage.host(recv, /*copy_in=*/false, /*copy_out=*/true);
  const int send_count = mpi_count(send.numel()), recv_count = mpi_count(recv.numel());
  const MPI_Datatype send_type = mpi_datatype(send.dtype()), recv_type = mpi_datatype(recv.dtype());
  work->new_request();  // [0]: the receive (its status is checked)
  work->new_request();  // [1]: the send
  work->after = [pending = work.get(), recv_type, recv_count, from] {
    check_received(pending->statuses[0], recv_type, recv_count, from);
  };
  if (mode == Mode::blocking) {
    STRATA_MPI_CHECK(MPI_Sendrecv(send_buf, send_count, send_type, to, kTag, recv_buf, recv_count,
                                  recv_type, from, kTag, comm_, &work->statuses[0]));
    work->finish();
    return {};
  }
  STRATA_MPI_CHECK(
      MPI_Irecv(recv_buf, recv_count, recv_type, from, kTag, comm_, &work->requests[0]));
  STRATA_MPI_CHECK(MPI_Isend(send_buf, send_count, send_type, to, kTag, comm_, &work->requests[1]));
  return CommHandle(std::move(work), context("send_recv"));
}

CommHandle MpiCommunicator::start_all_to_all(const Tensor& in, std::span<const int64_t> send_counts,
                                             const Tensor& out,
                                             std::span<const int64_t> recv_counts, Mode mode) {
  auto work = std::make_unique<MpiPending>(pinned_);
  void* send = work->stage.host(in, /*copy_in=*/true, /*copy_out=*/false);
  void* recv = work->stage.host(out, /*copy_in=*/false, /*copy_out=*/true);
  // counts = [send counts | send displacements | recv counts | recv displacements], in elements.
  const size_t p = static_cast<size_t>(size());
  std::vector<int>& c = work->counts;
  c.resize(4 * p);
  int64_t send_offset = 0, recv_offset = 0;
  for (size_t j = 0; j < p; ++j) {
    c[j] = mpi_count(send_counts[j]);
    c[p + j] = mpi_count(send_offset);
    c[2 * p + j] = mpi_count(recv_counts[j]);
    c[3 * p + j] = mpi_count(recv_offset);
    send_offset += send_counts[j];
    recv_offset += recv_counts[j];
  }
  const MPI_Datatype type = mpi_datatype(in.dtype());
  int* sc = c.data();
  int* sd = sc + p;
  int* rc = sd + p;
  int* rd = rc + p;
  STRATA_MPI_START(
      MPI_Alltoallv(send, sc, sd, type, recv, rc, rd, type, comm_),
      MPI_Ialltoallv(send, sc, sd, type, recv, rc, rd, type, comm_, work->new_request()),
      "all_to_all");
}

#undef STRATA_MPI_START

void MpiCommunicator::do_barrier() {
  STRATA_MPI_CHECK(MPI_Barrier(comm_));
}

std::vector<int64_t> MpiCommunicator::exchange_host(std::span<const int64_t> mine) {
  return mpi_all_gather_i64(comm_, mine);
}

}  // namespace strata

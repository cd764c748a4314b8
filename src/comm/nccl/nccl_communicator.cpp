#include "comm/nccl/nccl_communicator.h"

#include <cstring>

#include "comm/mpi_types.h"
#include "comm/watchdog.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_device.h"
#include "core/log.h"

namespace strata {

namespace {

// Sets the current device for a scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    STRATA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) STRATA_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

ncclDataType_t nccl_reduce_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u16:
      break;
  }
  STRATA_FAIL("NCCL cannot reduce ", dtype_name(dtype), " (it has no 16-bit integer type)");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  STRATA_FAIL("unknown reduce op code ", static_cast<int>(op));
}

// Collectives that only move data move bytes: every dtype (u16 included) travels as ncclUint8.
size_t bytes_of(const Tensor& t) {
  return t.nbytes();
}

// An event after the operation on the communication stream.
class NcclPending final : public CommHandle::Pending {
 public:
  NcclPending(ncclComm_t comm, int device, cudaEvent_t event, std::vector<Tensor> keep_alive)
      : comm_(comm), device_(device), event_(event), keep_alive_(std::move(keep_alive)) {}
  ~NcclPending() override { cudaEventDestroy(event_); }

  bool test() override {
    DeviceGuard guard(device_);
    cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaErrorNotReady) {
      check();
      return false;
    }
    STRATA_CUDA_CHECK(rc);
    check();
    return true;
  }

  void wait() override {
    DeviceGuard guard(device_);
    STRATA_CUDA_CHECK(cudaEventSynchronize(event_));
    check();
  }

 private:
  void check() {
    ncclResult_t async_error = ncclSuccess;
    STRATA_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_error));
    STRATA_NCCL_CHECK(async_error);
  }
  ncclComm_t comm_;
  int device_;
  cudaEvent_t event_;
  std::vector<Tensor> keep_alive_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(std::string name, MPI_Comm comm, int device)
    : Communicator(std::move(name), mpi_comm_rank(comm), mpi_comm_size(comm)), device_(device) {
  try {
    STRATA_MPI_CHECK(MPI_Comm_dup(comm, &mpi_comm_));
    STRATA_MPI_CHECK(MPI_Comm_set_errhandler(mpi_comm_, MPI_ERRORS_RETURN));
    DeviceGuard guard(device_);
    // Rank 0 makes the id; if that fails, the others learn it from the broadcast instead of
    // waiting forever in ncclCommInitRank.
    struct {
      int ok;
      ncclUniqueId id;
    } bootstrap;
    std::memset(&bootstrap, 0, sizeof(bootstrap));
    std::string failure;
    if (rank() == 0) {
      try {
        STRATA_NCCL_CHECK(ncclGetUniqueId(&bootstrap.id));
        bootstrap.ok = 1;
      } catch (const Error& e) {
        failure = e.what();
      }
    }
    STRATA_MPI_CHECK(MPI_Bcast(&bootstrap, sizeof(bootstrap), MPI_BYTE, 0, mpi_comm_));
    STRATA_CHECK(bootstrap.ok, "rank 0 could not make the NCCL unique id",
                 failure.empty() ? "" : ": ", failure);
    STRATA_NCCL_CHECK(ncclCommInitRank(&comm_, size(), bootstrap.id, rank()));
    host_ = std::make_unique<MpiCommunicator>(this->name(), mpi_comm_);
    host_->set_check_sizes(false);  // checked already, by the call that reaches this one
    STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
    // A timeout ends the process; first this communicator's kernels (ncclCommAbort is meant to be
    // called from another thread while one is blocked in the communicator).
    watchdog_hook_ = Watchdog::add_abort_hook([comm = comm_] { ncclCommAbort(comm); });
  } catch (const Error& e) {
    throw Error(detail::concat("creating the NCCL communicator on ", where(), " (cuda:", device_,
                               "): ", e.what()));
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (watchdog_hook_ >= 0) Watchdog::remove_abort_hook(watchdog_hook_);
  host_.reset();  // before its MPI communicator goes
  cudaSetDevice(device_);
  if (comm_ && !aborted_) {
    ncclResult_t rc = ncclCommDestroy(comm_);
    if (rc != ncclSuccess) log::warn("ncclCommDestroy on ", where(), ": ", ncclGetErrorString(rc));
  }
  if (compute_ready_) cudaEventDestroy(compute_ready_);
  if (stream_) cudaStreamDestroy(stream_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && mpi_comm_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_comm_);
}

void NcclCommunicator::abort() {
  if (comm_ && !aborted_) ncclCommAbort(comm_);
  aborted_ = true;
}

template <typename Start>
CommHandle NcclCommunicator::on_host(Mode mode, Start&& start) {
  CommHandle handle = start();
  if (mode == Mode::blocking) {
    handle.wait();
    return {};
  }
  return handle;
}

void NcclCommunicator::begin(std::initializer_list<const Tensor*> tensors) {
  STRATA_CHECK(!aborted_, "the NCCL communicator was aborted");
  for (const Tensor* t : tensors) {
    STRATA_CHECK(t->device() == Device::cuda(device_), "tensor ", t->describe(),
                 " is not on this NCCL communicator's device cuda:", device_);
  }
  STRATA_CUDA_CHECK(cudaSetDevice(device_));
  // After the work queued where the tensors are computed: their CudaDevice's compute stream, or
  // for memory from a bare allocator the stream set_compute_stream names.
  cudaStream_t compute = compute_stream_;
  for (const Tensor* t : tensors)
    if (const CudaDevice* d = cuda_device_of(*t)) {
      compute = d->stream();
      break;
    }
  STRATA_CUDA_CHECK(cudaEventRecord(compute_ready_, compute));
  STRATA_CUDA_CHECK(cudaStreamWaitEvent(stream_, compute_ready_, 0));
}

void NcclCommunicator::check_async_error() {
  ncclResult_t async_error = ncclSuccess;
  STRATA_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_error));
  STRATA_NCCL_CHECK(async_error);
}

CommHandle NcclCommunicator::end(Mode mode, std::string_view op, std::vector<Tensor> keep_alive) {
  if (mode == Mode::blocking) {
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_async_error();
    return {};
  }
  cudaEvent_t event = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  cudaError_t rc = cudaEventRecord(event, stream_);
  if (rc != cudaSuccess) cudaEventDestroy(event);
  STRATA_CUDA_CHECK(rc);
  return CommHandle(std::make_unique<NcclPending>(comm_, device_, event, std::move(keep_alive)),
                    context(op));
}

CommHandle NcclCommunicator::start_all_reduce(const Tensor& x, ReduceOp op, Mode mode) {
  if (x.device().is_cpu()) {
    Tensor t = x;
    return on_host(mode, [&] { return host_->all_reduce_async(t, op); });
  }
  begin({&x});
  STRATA_NCCL_CHECK(ncclAllReduce(x.raw(), x.raw(), static_cast<size_t>(x.numel()),
                                  nccl_reduce_type(x.dtype()), nccl_op(op), comm_, stream_));
  return end(mode, "all_reduce", {x});
}

CommHandle NcclCommunicator::start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op,
                                                  Mode mode) {
  if (in.device().is_cpu()) {
    Tensor o = out;
    return on_host(mode, [&] { return host_->reduce_scatter_async(in, o, op); });
  }
  begin({&in, &out});
  // In place when out is this rank's slot of in, which NCCL accepts as is.
  STRATA_NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                                      nccl_reduce_type(in.dtype()), nccl_op(op), comm_, stream_));
  return end(mode, "reduce_scatter", {in, out});
}

CommHandle NcclCommunicator::start_all_gather(const Tensor& in, const Tensor& out, Mode mode) {
  if (in.device().is_cpu()) {
    Tensor o = out;
    return on_host(mode, [&] { return host_->all_gather_async(in, o); });
  }
  begin({&in, &out});
  STRATA_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), bytes_of(in), ncclUint8, comm_, stream_));
  return end(mode, "all_gather", {in, out});
}

CommHandle NcclCommunicator::start_broadcast(const Tensor& x, int root, Mode mode) {
  if (x.device().is_cpu()) {
    Tensor t = x;
    return on_host(mode, [&] { return host_->broadcast_async(t, root); });
  }
  begin({&x});
  STRATA_NCCL_CHECK(ncclBroadcast(x.raw(), x.raw(), bytes_of(x), ncclUint8, root, comm_, stream_));
  return end(mode, "broadcast", {x});
}

CommHandle NcclCommunicator::start_send(const Tensor& x, int peer, Mode mode) {
  if (x.device().is_cpu()) return on_host(mode, [&] { return host_->send_async(x, peer); });
  STRATA_CHECK(peer != rank(),
               "NCCL send to oneself waits for a recv that cannot be posted; use "
               "send_recv");
  begin({&x});
  STRATA_NCCL_CHECK(ncclSend(x.raw(), bytes_of(x), ncclUint8, peer, comm_, stream_));
  return end(mode, "send", {x});
}

CommHandle NcclCommunicator::start_recv(const Tensor& x, int peer, Mode mode) {
  if (x.device().is_cpu()) {
    Tensor t = x;
    return on_host(mode, [&] { return host_->recv_async(t, peer); });
  }
  STRATA_CHECK(peer != rank(),
               "NCCL recv from oneself waits for a send that cannot be posted; use "
               "send_recv");
  begin({&x});
  STRATA_NCCL_CHECK(ncclRecv(x.raw(), bytes_of(x), ncclUint8, peer, comm_, stream_));
  return end(mode, "recv", {x});
}

CommHandle NcclCommunicator::start_send_recv(const Tensor& send, int to, const Tensor& recv,
                                             int from, Mode mode) {
  if (send.device().is_cpu()) {
    Tensor r = recv;
    return on_host(mode, [&] { return host_->send_recv_async(send, to, r, from); });
  }
  begin({&send, &recv});
  STRATA_NCCL_CHECK(ncclGroupStart());
  ncclResult_t send_rc = ncclSend(send.raw(), bytes_of(send), ncclUint8, to, comm_, stream_);
  ncclResult_t recv_rc = ncclRecv(recv.raw(), bytes_of(recv), ncclUint8, from, comm_, stream_);
  STRATA_NCCL_CHECK(ncclGroupEnd());
  STRATA_NCCL_CHECK(send_rc);
  STRATA_NCCL_CHECK(recv_rc);
  return end(mode, "send_recv", {send, recv});
}

CommHandle NcclCommunicator::start_all_to_all(const Tensor& in,
                                              std::span<const int64_t> send_counts,
                                              const Tensor& out,
                                              std::span<const int64_t> recv_counts, Mode mode) {
  if (in.device().is_cpu()) {
    Tensor o = out;
    return on_host(mode, [&] { return host_->all_to_all_async(in, send_counts, o, recv_counts); });
  }
  begin({&in, &out});
  const size_t element = in.element_size();
  const char* send_base = static_cast<const char*>(in.raw());
  char* recv_base = static_cast<char*>(out.raw());
  size_t send_offset = 0, recv_offset = 0;  // bytes
  ncclResult_t rc = ncclSuccess;
  STRATA_NCCL_CHECK(ncclGroupStart());
  for (int peer = 0; peer < size(); ++peer) {
    const size_t send_bytes = static_cast<size_t>(send_counts[static_cast<size_t>(peer)]) * element;
    const size_t recv_bytes = static_cast<size_t>(recv_counts[static_cast<size_t>(peer)]) * element;
    if (rc == ncclSuccess && send_bytes > 0)
      rc = ncclSend(send_base + send_offset, send_bytes, ncclUint8, peer, comm_, stream_);
    if (rc == ncclSuccess && recv_bytes > 0)
      rc = ncclRecv(recv_base + recv_offset, recv_bytes, ncclUint8, peer, comm_, stream_);
    send_offset += send_bytes;
    recv_offset += recv_bytes;
  }
  STRATA_NCCL_CHECK(ncclGroupEnd());
  STRATA_NCCL_CHECK(rc);
  return end(mode, "all_to_all", {in, out});
}

void NcclCommunicator::do_barrier() {
  STRATA_CHECK(!aborted_, "the NCCL communicator was aborted");
  DeviceGuard guard(device_);
  STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  STRATA_MPI_CHECK(MPI_Barrier(mpi_comm_));
}

std::vector<int64_t> NcclCommunicator::exchange_host(std::span<const int64_t> mine) {
  return mpi_all_gather_i64(mpi_comm_, mine);
}

}  // namespace strata

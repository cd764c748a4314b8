// The NCCL backend: collectives on CUDA tensors, one GPU per rank. Bootstrapped over MPI (rank 0
// of the group makes the unique id, MPI_Bcast hands it to the others, every rank joins with
// ncclCommInitRank), so any MPI sub-communicator of the process grid becomes an NCCL group.
//
// Streams: every operation runs on this communicator's own stream (non-blocking w.r.t. the legacy
// default stream), after the work already queued on the compute stream (an event recorded there,
// waited for on the communication stream): the compute stream of the tensors' CudaDevice, or for
// memory from a bare allocator the one set_compute_stream names. The blocking calls return when the operation finished
// on the device; the *_async handles hold an event: is_done() queries it, wait() synchronises on
// it. NCCL errors that surface asynchronously are checked in wait() (ncclCommGetAsyncError). When
// the watchdog times out (a peer died or hangs), it calls ncclCommAbort on every live
// communicator before it ends the process, so no kernel keeps waiting on the GPU.
//
// Reductions: sum and max as NCCL does them (bf16/f16 reduced in f32, rounded at each step), avg
// as ncclAvg (NCCL scales by 1/size as it reduces, so for group sizes that are not powers of two
// the last bit may differ from the MPI backend's sum-then-divide). u16 cannot be reduced (NCCL has
// no 16-bit integer type); every dtype can be moved (gathers, broadcast, send/recv, all-to-all go
// as bytes). On NCCL, a blocking send or recv to oneself is refused (use send_recv).
//
// CPU tensors (the small host-side exchanges of a run: losses, counts, flags) go over MPI, through
// an MpiCommunicator on the same ranks, so one group object serves both.
//
// Compiled only with CUDA (src/comm/nccl/ is outside the CPU build); the simulated GPU brings an
// NCCL emulated over MPI (tests/gpusim/src/nccl.cpp), so this code runs under mpirun in CI.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace strata {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `comm`'s ranks. `device` is this rank's GPU (each rank of a group its own:
  // NCCL refuses two ranks on one device).
  NcclCommunicator(std::string name, MPI_Comm comm, int device);
  ~NcclCommunicator() override;

  std::string_view backend() const override { return "nccl"; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // The stream whose queued work each operation waits for (default: the legacy default stream).
  void set_compute_stream(cudaStream_t stream) { compute_stream_ = stream; }
  // ncclCommAbort: in-flight operations end, the communicator is unusable afterwards. For the
  // abort-all-ranks path (STYLE habit 15) when a peer has failed.
  void abort();

 protected:
  CommHandle start_all_reduce(const Tensor& x, ReduceOp op, Mode mode) override;
  CommHandle start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op,
                                  Mode mode) override;
  CommHandle start_all_gather(const Tensor& in, const Tensor& out, Mode mode) override;
  CommHandle start_broadcast(const Tensor& x, int root, Mode mode) override;
  CommHandle start_send(const Tensor& x, int peer, Mode mode) override;
  CommHandle start_recv(const Tensor& x, int peer, Mode mode) override;
  CommHandle start_send_recv(const Tensor& send, int to, const Tensor& recv, int from,
                             Mode mode) override;
  CommHandle start_all_to_all(const Tensor& in, std::span<const int64_t> send_counts,
                              const Tensor& out, std::span<const int64_t> recv_counts,
                              Mode mode) override;
  void do_barrier() override;
  std::vector<int64_t> exchange_host(std::span<const int64_t> mine) override;

 private:
  // Checks that the tensors live on this communicator's GPU, makes the communication stream wait
  // for the compute stream, and sets the device for the calls that follow.
  void begin(std::initializer_list<const Tensor*> tensors);
  // Blocking: synchronises and returns a done handle. Async: a handle on an event after the op.
  CommHandle end(Mode mode, std::string_view op, std::vector<Tensor> keep_alive);
  void check_async_error();

  MPI_Comm mpi_comm_ = MPI_COMM_NULL;
  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_stream_ = cudaStreamLegacy;
  cudaEvent_t compute_ready_ = nullptr;
  bool aborted_ = false;
  int watchdog_hook_ = -1;  // this communicator's abort on a watchdog timeout
  std::unique_ptr<MpiCommunicator> host_;  // CPU tensors
  // An operation on CPU tensors, through host_: `start` begins it there (async), blocking mode
  // waits for it.
  template <typename Start>
  CommHandle on_host(Mode mode, Start&& start);
};

}  // namespace strata

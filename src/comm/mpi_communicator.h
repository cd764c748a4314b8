// The MPI backend: collectives on CPU tensors directly, and on CUDA tensors through pinned host
// staging (host_staging.h). Blocking calls map to MPI's blocking collectives (MPI_Allreduce, ...),
// the *_async calls to the nonblocking ones (MPI_Iallreduce, ...); with OpenMPI, a nonblocking
// collective advances inside MPI calls, so is_done() polling (MPI_Test) or wait() drives it.
#pragma once

#include <mpi.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/host_staging.h"
#include "comm/mpi_types.h"

namespace strata {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (collective over its ranks), so this communicator's messages never match
  // anyone else's, and sets MPI_ERRORS_RETURN on the duplicate so every failure becomes an Error.
  // Must be destroyed before MPI is finalised (MpiSession).
  MpiCommunicator(std::string name, MPI_Comm comm);
  ~MpiCommunicator() override;

  std::string_view backend() const override { return "mpi"; }
  MPI_Comm mpi_comm() const { return comm_; }

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
  MPI_Comm comm_ = MPI_COMM_NULL;
  MpiReduceOps ops_;
  std::shared_ptr<PinnedPool> pinned_ = std::make_shared<PinnedPool>();
};

}  // namespace strata

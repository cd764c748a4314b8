// The Communicators of a process grid: one for the world and one per axis (tp, sp, dp, pp, ep,
// dp_sp, ep_dp), each made by MPI_Comm_split of the world along the grid's groups and, for the
// nccl backend, an NcclCommunicator bootstrapped over that MPI sub-communicator. Built once by the
// run and passed to whoever communicates (no globals); each Communicator is named after its axis.
#pragma once

#include <mpi.h>

#include <array>
#include <memory>
#include <string_view>

#include "comm/communicator.h"
#include "comm/process_grid.h"

namespace strata {

enum class Backend : uint8_t { mpi, nccl };
std::string_view backend_name(Backend backend);
Backend parse_backend(std::string_view name);  // "mpi", "nccl"

class ProcessGroups {
 public:
  // Collective over `world`: every rank calls it, with the same grid sizes (checked: ranks that
  // disagree all get the same Error). `cuda_device` is this rank's GPU, for the nccl backend.
  ProcessGroups(const ProcessGrid& grid, Backend backend, MPI_Comm world = MPI_COMM_WORLD,
                int cuda_device = -1);
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  const ProcessGrid& grid() const { return grid_; }
  Backend backend() const { return backend_; }
  Communicator& world() const { return *world_; }
  Communicator& get(Axis axis) const { return *groups_[static_cast<size_t>(axis)]; }
  Communicator& tp() const { return get(Axis::tp); }
  Communicator& sp() const { return get(Axis::sp); }
  Communicator& dp() const { return get(Axis::dp); }
  Communicator& pp() const { return get(Axis::pp); }
  // A second communicator over the pp group's ranks: the pipeline sends activations forward on
  // pp() and gradients backward on this one, so untagged in-order messages of the two kinds
  // between the same two ranks can never match each other.
  Communicator& pp_backward() const { return *pp_backward_; }
  Communicator& ep() const { return get(Axis::ep); }
  Communicator& dp_sp() const { return get(Axis::dp_sp); }
  Communicator& ep_dp() const { return get(Axis::ep_dp); }

 private:
  ProcessGrid grid_;
  Backend backend_;
  std::unique_ptr<Communicator> world_;
  std::array<std::unique_ptr<Communicator>, kAllAxes.size()> groups_;
  std::unique_ptr<Communicator> pp_backward_;
};

}  // namespace strata

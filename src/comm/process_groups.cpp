#include "comm/process_groups.h"

#include "comm/mpi_communicator.h"
#include "comm/mpi_types.h"

#if STRATA_HAVE_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace strata {

namespace {

std::unique_ptr<Communicator> make_communicator(std::string name, MPI_Comm comm, Backend backend,
                                                int cuda_device) {
  if (backend == Backend::mpi) return std::make_unique<MpiCommunicator>(std::move(name), comm);
#if STRATA_HAVE_NCCL
  STRATA_CHECK(cuda_device >= 0, "the nccl backend needs this rank's CUDA device, got ",
               cuda_device);
  return std::make_unique<NcclCommunicator>(std::move(name), comm, cuda_device);
#else
  STRATA_FAIL("the nccl backend needs CUDA, which this build does not have (use backend mpi)");
#endif
}

// Every rank must build the same grid; compare the sizes across the world before splitting.
void check_same_sizes(const ProcessGrid& grid, MPI_Comm world) {
  const GridSizes& s = grid.sizes();
  const int64_t mine[5] = {s.dp, s.pp, s.sp, s.tp, s.ep};
  std::vector<int64_t> all = mpi_all_gather_i64(world, mine);
  for (size_t r = 0; r < all.size() / 5; ++r) {
    const GridSizes theirs{static_cast<int>(all[r * 5]), static_cast<int>(all[r * 5 + 1]),
                           static_cast<int>(all[r * 5 + 2]), static_cast<int>(all[r * 5 + 3]),
                           static_cast<int>(all[r * 5 + 4])};
    STRATA_CHECK(theirs == s, "ranks disagree on the process grid: rank ", r, " has ",
                 theirs.describe(), ", rank ", grid.rank(), " has ", s.describe());
  }
}

}  // namespace

std::string_view backend_name(Backend backend) {
  return backend == Backend::mpi ? "mpi" : "nccl";
}

Backend parse_backend(std::string_view name) {
  if (name == "mpi") return Backend::mpi;
  if (name == "nccl") return Backend::nccl;
  STRATA_FAIL("unknown communication backend '", name, "' (valid: mpi, nccl)");
}

ProcessGroups::ProcessGroups(const ProcessGrid& grid, Backend backend, MPI_Comm world,
                             int cuda_device)
    : grid_(grid), backend_(backend) {
  STRATA_CHECK(mpi_comm_size(world) == grid.world_size() && mpi_comm_rank(world) == grid.rank(),
               "process grid for rank ", grid.rank(), " of ", grid.world_size(),
               " used on MPI rank ", mpi_comm_rank(world), " of ", mpi_comm_size(world));
  check_same_sizes(grid, world);
  world_ = make_communicator("world", world, backend, cuda_device);
  for (Axis axis : kAllAxes) {
    const Group& group = grid.group(axis);
    // color: the group's lowest rank names it; key: world rank, so group rank = index in the list.
    MPI_Comm sub = MPI_COMM_NULL;
    STRATA_MPI_CHECK(MPI_Comm_split(world, group.ranks.front(), grid.rank(), &sub));
    try {
      groups_[static_cast<size_t>(axis)] =
          make_communicator(std::string(axis_name(axis)), sub, backend, cuda_device);
      if (axis == Axis::pp)
        pp_backward_ = make_communicator("pp_backward", sub, backend, cuda_device);
    } catch (...) {
      MPI_Comm_free(&sub);
      throw;
    }
    STRATA_MPI_CHECK(MPI_Comm_free(&sub));  // the communicator holds its own duplicate
    Communicator& made = get(axis);
    STRATA_CHECK(made.size() == group.size() && made.rank() == group.index, "group ",
                 axis_name(axis), ": MPI_Comm_split gave rank ", made.rank(), " of ", made.size(),
                 ", the grid says ", group.index, " of ", group.size());
  }
}

ProcessGroups::~ProcessGroups() = default;

}  // namespace strata

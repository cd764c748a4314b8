// The grid's communicators at np 4: for each hand-checked layout (the tables of
// tests/unit/test_process_grid.cpp), every group's communicator holds exactly the ranks the grid
// says, in that order, as an all_gather of world ranks over it shows.
#include <gtest/gtest.h>

#include "collective_checks.h"
#include "comm/process_groups.h"

using namespace strata;
using namespace strata::testing;

namespace {

// Gathers the world ranks of the group's members over the group's own communicator.
std::vector<int> members_seen_by(Communicator& comm, int world_rank) {
  Tensor mine = Tensor::from_vector(std::vector<int32_t>{world_rank}, {1});
  Tensor all = Tensor::zeros({comm.size()}, DType::i32);
  comm.all_gather(mine, all);
  return std::vector<int>(all.data<int32_t>(), all.data<int32_t>() + comm.size());
}

void check_layout(GridSizes sizes) {
  const int world_size = world().size(), rank = world().rank();
  ProcessGrid grid(world_size, rank, sizes);
  ProcessGroups groups(grid, Backend::mpi);
  EXPECT_EQ(groups.world().size(), world_size);
  EXPECT_EQ(groups.world().name(), "world");
  for (Axis axis : kAllAxes) {
    Communicator& comm = groups.get(axis);
    EXPECT_EQ(comm.name(), axis_name(axis));
    EXPECT_EQ(comm.rank(), grid.group(axis).index) << sizes.describe() << " " << axis_name(axis);
    EXPECT_EQ(members_seen_by(comm, rank), grid.group(axis).ranks)
        << sizes.describe() << " " << axis_name(axis) << " on rank " << rank;
  }
  // Averaging over dp_sp gives the mean of the dp_sp members' world ranks.
  Tensor x = Tensor::from_vector(std::vector<double>{static_cast<double>(rank)}, {1});
  groups.dp_sp().all_reduce(x, ReduceOp::avg);
  double mean = 0;
  for (int r : grid.group(Axis::dp_sp).ranks) mean += r;
  mean /= grid.group(Axis::dp_sp).size();
  EXPECT_EQ(x.data<double>()[0], mean);
}

}  // namespace

TEST(ProcessGroups, HandTablesAtFourRanks) {
  if (world().size() != 4) GTEST_SKIP() << "the hand tables are for 4 ranks";
  check_layout({.dp = 2, .tp = 2});
  check_layout({.pp = 2, .tp = 2});
  check_layout({.dp = 2, .sp = 2});
  check_layout({.dp = 2, .pp = 2, .ep = 2});
}

TEST(ProcessGroups, AnyWorldSize) {
  const int p = world().size();
  check_layout({.dp = p});
  check_layout({.tp = p});
  check_layout({.dp = p, .ep = p});
}

TEST(ProcessGroups, RanksThatDisagreeAllGetTheError) {
  const int p = world().size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  // Each layout is valid on its own; the ranks just do not agree.
  const GridSizes sizes = world().rank() == 0 ? GridSizes{.dp = p} : GridSizes{.tp = p};
  ProcessGrid grid(p, world().rank(), sizes);
  expect_contains(error_of([&] { ProcessGroups groups(grid, Backend::mpi); }),
                  "ranks disagree on the process grid");
}

TEST(ProcessGroups, BackendNames) {
  EXPECT_EQ(parse_backend("mpi"), Backend::mpi);
  EXPECT_EQ(backend_name(Backend::nccl), "nccl");
  expect_contains(error_of([] { parse_backend("gloo"); }),
                  "unknown communication backend 'gloo' (valid: mpi, nccl)");
#if !STRATA_CUDA
  ProcessGrid grid(world().size(), world().rank(), {.dp = world().size()});
  expect_contains(error_of([&] { ProcessGroups groups(grid, Backend::nccl); }),
                  "the nccl backend needs CUDA");
#endif
}

// main() of the multi-rank tests: every rank runs every test (each knows its answer locally);
// only rank 0 prints gtest's report, the other ranks print their own failures with their rank,
// and each rank exits nonzero when any of its tests failed, so mpirun (and ctest) fail with it.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "collective_checks.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_session.h"

namespace {

// The report of a rank other than 0: failures only, each line with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  strata::MpiSession session(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = session.world_rank();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int result = 0;
  {
    strata::MpiCommunicator world("world", MPI_COMM_WORLD);
    strata::testing::set_world(&world);
    result = RUN_ALL_TESTS();
    strata::testing::set_world(nullptr);
  }
  // Rank 0's summary covers rank 0 only: say which other ranks failed.
  int failed = result != 0 ? 1 : 0;
  std::vector<int> all(static_cast<size_t>(session.world_size()));
  MPI_Gather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    for (size_t r = 1; r < all.size(); ++r)
      if (all[r])
        std::fprintf(stderr, "rank %zu of %zu had failures (see its [rank %zu] lines)\n", r,
                     all.size(), r);
  }
  return result;
}

// Misuse across ranks: ranks that disagree on sizes, dtypes, ops or roots all get the same Error
// (naming the group, this rank and the per-rank values) and nothing hangs; the communicator stays
// usable afterwards. Local misuse on one rank reaches every rank through the same check.
#include <gtest/gtest.h>
#include <mpi.h>

#include "collective_checks.h"
#include "comm/mpi_communicator.h"

using namespace strata;
using namespace strata::testing;

namespace {

// After an error, the group still works: an all_reduce of ones gives the group size.
void expect_still_usable(Communicator& comm) {
  Tensor one = Tensor::from_vector(std::vector<int32_t>{1}, {1});
  comm.all_reduce(one);
  EXPECT_EQ(one.data<int32_t>()[0], comm.size()) << comm.where();
}

std::string per_rank_list(int p, int odd_rank, const std::string& usual, const std::string& odd) {
  std::string out;
  for (int r = 0; r < p; ++r)
    out += (r ? ", " : "") + std::string("rank ") + std::to_string(r) + " has " +
           (r == odd_rank ? odd : usual);
  return out;
}

}  // namespace

TEST(CommErrors, AllReduceCountsDifferOnEveryRank) {
  Communicator& w = world();
  const int p = w.size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  Tensor x = Tensor::zeros({w.rank() == 1 ? 1000 : 1024}, DType::f32);
  const std::string message = error_of([&] { w.all_reduce(x); });
  expect_contains(message, "all_reduce on group 'world' (rank " + std::to_string(w.rank()) +
                               " of " + std::to_string(p) + " ranks): element counts differ " +
                               "across ranks: " + per_rank_list(p, 1, "1024", "1000"));
  expect_still_usable(w);
}

TEST(CommErrors, AsyncFormsCheckBeforeStarting) {
  Communicator& w = world();
  if (w.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  Tensor in = Tensor::zeros({w.rank() == 0 ? 5 : 6}, DType::bf16);
  Tensor out = Tensor::zeros({in.numel() * w.size()}, DType::bf16);
  expect_contains(error_of([&] { w.all_gather_async(in, out).wait(); }),
                  "all_gather on group 'world'");
  expect_contains(error_of([&] { w.all_gather_async(in, out).wait(); }),
                  "element counts differ across ranks: rank 0 has 5, rank 1 has 6");
  expect_still_usable(w);
}

TEST(CommErrors, DtypesOpsAndRootsMustAgree) {
  Communicator& w = world();
  const int p = w.size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  const bool odd = w.rank() == p - 1;
  Tensor in = Tensor::zeros({4 * p}, odd ? DType::bf16 : DType::f32);
  Tensor out = Tensor::zeros({4}, in.dtype());
  expect_contains(error_of([&] { w.reduce_scatter(in, out); }),
                  "dtypes differ across ranks: " + per_rank_list(p, p - 1, "f32", "bf16"));

  Tensor x = Tensor::zeros({8}, DType::f32);
  expect_contains(error_of([&] { w.all_reduce(x, odd ? ReduceOp::max : ReduceOp::sum); }),
                  "reduce ops differ across ranks: " + per_rank_list(p, p - 1, "sum", "max"));

  expect_contains(error_of([&] { w.broadcast(x, odd ? 1 : 0); }), "broadcast on group 'world'");
  expect_contains(error_of([&] { w.broadcast(x, odd ? 1 : 0); }),
                  "roots differ across ranks: " + per_rank_list(p, p - 1, "0", "1"));
  expect_still_usable(w);
}

TEST(CommErrors, AllToAllCountsMustPairUp) {
  Communicator& w = world();
  const int p = w.size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  // Everyone sends 3 elements to everyone, but rank 1 expects only 2 from rank 0.
  std::vector<int64_t> send(static_cast<size_t>(p), 3), recv(static_cast<size_t>(p), 3);
  if (w.rank() == 1) recv[0] = 2;
  int64_t recv_total = 0;
  for (int64_t c : recv) recv_total += c;
  Tensor in = Tensor::zeros({3 * p}, DType::f32);
  Tensor out = Tensor::zeros({recv_total}, DType::f32);
  const std::string message = error_of([&] { w.all_to_all(in, send, out, recv); });
  expect_contains(message, "all_to_all on group 'world'");
  expect_contains(message, "rank 0 sends 3 elements to rank 1, which expects 2");
  expect_still_usable(w);
}

// A bad argument on one rank only: that rank reports its own problem, the others learn which rank
// it was, and nobody is left waiting in the collective.
TEST(CommErrors, LocalMistakeOnOneRankStopsAll) {
  Communicator& w = world();
  const int p = w.size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  Tensor in = Tensor::zeros({10}, DType::f32);
  Tensor out = Tensor::zeros({w.rank() == 1 ? 10 * p + 1 : 10 * p}, DType::f32);
  const std::string message = error_of([&] { w.all_gather(in, out); });
  if (w.rank() == 1) {
    expect_contains(message, "must hold size (" + std::to_string(p) + ") times the elements of in");
  } else {
    expect_contains(message, "invalid arguments on rank(s) 1 (each reports its own error)");
  }
  expect_contains(message, "all_gather on group 'world'");
  expect_still_usable(w);
}

TEST(CommErrors, SubGroupErrorsNameTheGroup) {
  Communicator& w = world();
  if (w.size() < 4) GTEST_SKIP() << "needs 4 ranks";
  MPI_Comm sub = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, w.rank() / 2, w.rank(), &sub), MPI_SUCCESS);
  MpiCommunicator dp("dp", sub);
  MPI_Comm_free(&sub);
  Tensor x = Tensor::zeros({dp.rank() == 0 ? 1024 : 1000}, DType::f32);
  expect_contains(error_of([&] { dp.all_reduce(x); }),
                  "all_reduce on group 'dp' (rank " + std::to_string(dp.rank()) +
                      " of 2 ranks): element counts differ across ranks: rank 0 has 1024, rank 1 "
                      "has 1000");
  expect_still_usable(dp);
}

TEST(CommErrors, ReceivedCountMustMatch) {
  Communicator& w = world();
  if (w.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  if (w.rank() == 0) {
    w.send(Tensor::zeros({10}, DType::f32), 1);
  } else if (w.rank() == 1) {
    Tensor x = Tensor::zeros({12}, DType::f32);
    expect_contains(error_of([&] { w.recv(x, 0); }),
                    "recv on group 'world' (rank 1 of " + std::to_string(w.size()) +
                        " ranks): received 10 elements from rank 0 into a tensor of 12 elements");
  }
  expect_still_usable(w);
}

TEST(CommErrors, LocalMisuse) {
  Communicator& w = world();
  Tensor ints = Tensor::zeros({4}, DType::i32);
  expect_contains(error_of([&] { w.all_reduce(ints, ReduceOp::avg); }),
                  "reduce op avg needs a floating dtype, got i32");
  Tensor x = Tensor::zeros({4}, DType::f32);
  expect_contains(error_of([&] { w.send(x, w.rank()); }),
                  "a blocking send to oneself would deadlock");
  expect_contains(error_of([&] { w.send(x, w.size()); }), "is not a rank of the group");
  Tensor strided = Tensor::zeros({4, 4}, DType::f32).slice(1, 0, 2);
  expect_contains(error_of([&] { w.all_reduce(strided); }), "x must be contiguous");
  // Overlapping but not the in-place slot.
  Tensor big = Tensor::zeros({8 * w.size() + 1}, DType::f32);
  Tensor out = big.slice(0, 0, 8 * w.size());
  Tensor in = big.slice(0, 1, 9);
  expect_contains(error_of([&] { w.all_gather(in, out); }),
                  "in overlaps out but is not this rank's slot of it");
  expect_still_usable(w);
}

TEST(CommErrors, ChecksCanBeTurnedOff) {
  Communicator& w = world();
  EXPECT_TRUE(w.checks_sizes());
  w.set_check_sizes(false);
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2});
  w.all_reduce(x, ReduceOp::avg);
  EXPECT_EQ(x.data<double>()[1], 2.0);
  // Local checks still run (and, with no exchange, throw on this rank alone: every rank here).
  Tensor ints = Tensor::zeros({4}, DType::i32);
  expect_contains(error_of([&] { w.all_reduce(ints, ReduceOp::avg); }), "needs a floating dtype");
  w.set_check_sizes(true);
}

// Every collective of the MPI backend on CPU tensors against the answer each rank computes
// locally: all dtypes, sum/avg/max, uneven sizes, in place and out of place, blocking and async,
// on the world and on sub-groups. One table per collective (collective_checks.h does the work).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <thread>

#include "collective_checks.h"
#include "comm/mpi_communicator.h"
#include "core/random.h"

using namespace strata;
using namespace strata::testing;

namespace {

const std::vector<DType> kAllDtypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::u16};
const std::vector<int64_t> kSizes = {1, 7, 1000, 65537};

// dtype x op (avg for floating dtypes only) x size, blocking and out of place; then the variants
// (async, in place) at a few sizes.
std::vector<CollectiveCase> reduction_cases(bool with_in_place) {
  std::vector<CollectiveCase> cases;
  for (DType dtype : kAllDtypes) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      if (op == ReduceOp::avg && !is_floating(dtype)) continue;
      for (int64_t n : kSizes) cases.push_back({dtype, op, n, false, false});
      cases.push_back({dtype, op, 7, true, false});
      cases.push_back({dtype, op, 65537, true, false});
      if (with_in_place) {
        cases.push_back({dtype, op, 7, false, true});
        cases.push_back({dtype, op, 1000, true, true});
      }
    }
  }
  return cases;
}

std::vector<CollectiveCase> movement_cases() {
  std::vector<CollectiveCase> cases;
  for (DType dtype : kAllDtypes) {
    for (int64_t n : kSizes) cases.push_back({dtype, ReduceOp::sum, n, false, false});
    cases.push_back({dtype, ReduceOp::sum, 1000, true, false});
    cases.push_back({dtype, ReduceOp::sum, 7, false, true});
    cases.push_back({dtype, ReduceOp::sum, 1000, true, true});
  }
  return cases;
}

// dtype x size, blocking, then async at one size (ring: n elements; all_to_all: n is the unit of
// the uneven counts).
std::vector<CollectiveCase> point_to_point_cases(const std::vector<int64_t>& sizes) {
  std::vector<CollectiveCase> cases;
  for (DType dtype : kAllDtypes) {
    for (int64_t n : sizes) cases.push_back({dtype, ReduceOp::sum, n, false, false});
    cases.push_back({dtype, ReduceOp::sum, sizes.back(), true, false});
  }
  return cases;
}

std::string name_of(const ::testing::TestParamInfo<CollectiveCase>& info) {
  return case_name(info.param);
}

// Seeds differ per collective so no test can pass by reading another's leftovers.
class AllReduce : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(AllReduce, MatchesLocalAnswer) {
  check_all_reduce(world(), cpu_allocator(), GetParam(), 11);
}
INSTANTIATE_TEST_SUITE_P(Mpi, AllReduce, ::testing::ValuesIn(reduction_cases(false)), name_of);

class ReduceScatter : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(ReduceScatter, MatchesLocalAnswer) {
  check_reduce_scatter(world(), cpu_allocator(), GetParam(), 12);
}
INSTANTIATE_TEST_SUITE_P(Mpi, ReduceScatter, ::testing::ValuesIn(reduction_cases(true)), name_of);

class AllGather : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(AllGather, MatchesLocalAnswer) {
  check_all_gather(world(), cpu_allocator(), GetParam(), 13);
}
INSTANTIATE_TEST_SUITE_P(Mpi, AllGather, ::testing::ValuesIn(movement_cases()), name_of);

class Broadcast : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(Broadcast, FromFirstAndLastRank) {
  check_broadcast(world(), cpu_allocator(), GetParam(), 0, 14);
  check_broadcast(world(), cpu_allocator(), GetParam(), world().size() - 1, 15);
}
INSTANTIATE_TEST_SUITE_P(Mpi, Broadcast, ::testing::ValuesIn(movement_cases()), name_of);

class Ring : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(Ring, SendRecvAndHandles) {
  check_ring(world(), cpu_allocator(), GetParam(), /*use_handles=*/false, 16);
  check_ring(world(), cpu_allocator(), GetParam(), /*use_handles=*/true, 17);
}
INSTANTIATE_TEST_SUITE_P(Mpi, Ring, ::testing::ValuesIn(point_to_point_cases(kSizes)), name_of);

class AllToAll : public ::testing::TestWithParam<CollectiveCase> {};
TEST_P(AllToAll, UnevenSplits) {
  check_all_to_all(world(), cpu_allocator(), GetParam(), GetParam().n, 18);
}
INSTANTIATE_TEST_SUITE_P(Mpi, AllToAll, ::testing::ValuesIn(point_to_point_cases({1, 1000})),
                         name_of);

// A sub-group of the world, as the process grid makes them.
std::unique_ptr<MpiCommunicator> split_world(const std::string& name, int color) {
  MPI_Comm sub = MPI_COMM_NULL;
  STRATA_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color, world().rank(), &sub));
  auto comm = std::make_unique<MpiCommunicator>(name, sub);
  STRATA_MPI_CHECK(MPI_Comm_free(&sub));
  return comm;
}

void check_everything_on(Communicator& comm, uint64_t seed) {
  Allocator& cpu = cpu_allocator();
  check_all_reduce(comm, cpu, {DType::f32, ReduceOp::sum, 1000, false, false}, seed);
  check_all_reduce(comm, cpu, {DType::bf16, ReduceOp::avg, 1000, true, false}, seed + 1);
  check_reduce_scatter(comm, cpu, {DType::f32, ReduceOp::max, 1000, false, true}, seed + 2);
  check_all_gather(comm, cpu, {DType::i64, ReduceOp::sum, 7, true, false}, seed + 3);
  check_broadcast(comm, cpu, {DType::f16, ReduceOp::sum, 1000, false, false}, comm.size() - 1,
                  seed + 4);
  check_ring(comm, cpu, {DType::f32, ReduceOp::sum, 1000, false, false}, false, seed + 5);
  check_all_to_all(comm, cpu, {DType::f32, ReduceOp::sum, 0, false, false}, 10, seed + 6);
}

}  // namespace

// World of 4 split two ways: halves {0,1}, {2,3} and interleaved {0,2}, {1,3}; the groups use
// different seeds, so data crossing between groups shows up as wrong values.
TEST(SubGroups, HalvesAndInterleaved) {
  if (world().size() < 4) GTEST_SKIP() << "needs 4 ranks, have " << world().size();
  const int r = world().rank();
  auto halves = split_world("half", r / 2);
  ASSERT_EQ(halves->size(), world().size() / 2);
  EXPECT_EQ(halves->rank(), r % 2);
  check_everything_on(*halves, 100 + static_cast<uint64_t>(r / 2) * 10);
  auto interleaved = split_world("interleaved", r % 2);
  EXPECT_EQ(interleaved->rank(), r / 2);
  check_everything_on(*interleaved, 200 + static_cast<uint64_t>(r % 2) * 10);
}

// A size-1 communicator does nothing, and everything works on it (STYLE habit 11).
TEST(SubGroups, SingletonGroup) {
  auto self = split_world("self", world().rank());
  ASSERT_EQ(self->size(), 1);
  check_everything_on(*self, 300 + static_cast<uint64_t>(world().rank()));
}

TEST(Async, SeveralInFlightThenPolled) {
  Allocator& cpu = cpu_allocator();
  const int p = world().size(), r = world().rank();
  std::vector<double> a(5000), b(300);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = input_value(DType::f32, 20, static_cast<uint64_t>(r), static_cast<int64_t>(i), p);
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = input_value(DType::f64, 21, static_cast<uint64_t>(r), static_cast<int64_t>(i), p);
  Tensor x = make_tensor(a, DType::f32, cpu), y = make_tensor(b, DType::f64, cpu);
  Tensor gathered = Tensor::zeros({300 * p}, DType::f64);
  CommHandle h1 = world().all_reduce_async(x, ReduceOp::max);
  CommHandle h2 = world().all_gather_async(y, gathered);
  // Poll gently (the ranks share 2 cores): is_done() drives MPI's progress.
  while (!h1.is_done() || !h2.is_done())
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  std::vector<double> want_max(a.size()), want_gather;
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<double> per_rank;
    for (int q = 0; q < p; ++q)
      per_rank.push_back(
          input_value(DType::f32, 20, static_cast<uint64_t>(q), static_cast<int64_t>(i), p));
    want_max[i] = reduce_expected(DType::f32, ReduceOp::max, per_rank);
  }
  for (int q = 0; q < p; ++q)
    for (int64_t i = 0; i < 300; ++i)
      want_gather.push_back(input_value(DType::f64, 21, static_cast<uint64_t>(q), i, p));
  expect_values(x, want_max, "polled all_reduce max");
  expect_values(gathered, want_gather, "polled all_gather");
  h1.wait();  // waiting again on a finished handle is a no-op
}

TEST(Async, HandleDestroyedUnwaitedStillCompletes) {
  const int p = world().size();
  Tensor x = Tensor::from_vector(std::vector<float>(100, 1.0f), {100});
  { CommHandle dropped = world().all_reduce_async(x, ReduceOp::sum); }
  EXPECT_EQ(x.data<float>()[0], static_cast<float>(p));
  EXPECT_EQ(x.data<float>()[99], static_cast<float>(p));
}

TEST(Async, SendOfADroppedTensorStillDeliversIt) {
  // A pipeline drops its activation right after starting the send; the handle must keep the
  // memory alive (and unreused) until the message is out, however late the receiver posts.
  const int p = world().size(), r = world().rank();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  const int64_t n = 1 << 18;  // 1 MiB of f32: past MPI's eager limit, so sent by rendezvous
  CommHandle send;
  if (r == 0) {
    Tensor x = Tensor::empty({n}, DType::f32);
    for (int64_t i = 0; i < n; ++i) x.data<float>()[i] = static_cast<float>(i);
    send = world().send_async(x, 1);
  }
  // The freed block would be handed out again to the next allocation of its size: fill it.
  Tensor reuse = Tensor::empty({n}, DType::f32);
  fill(reuse, -1.0);
  if (r == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Tensor y = Tensor::empty({n}, DType::f32);
    world().recv(y, 0);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += y.data<float>()[i] != static_cast<float>(i);
    EXPECT_EQ(wrong, 0) << "elements overwritten before the send completed";
  }
  send.wait();
  world().barrier();
}

TEST(Barrier, WaitsForTheLastRank) {
  // Rank 0 arrives 150 ms late; nobody may leave the barrier before it arrives. The bound is half
  // that: a rank may itself leave the first barrier late when 4 ranks share 2 busy cores.
  world().barrier();
  const double start = MPI_Wtime();
  if (world().rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  world().barrier();
  EXPECT_GE(MPI_Wtime() - start, 0.075) << "left the barrier before rank 0 arrived";
}

TEST(Shapes, OnlyElementCountsMatter) {
  // A [2, 3] tensor gathers into a [p, 2, 3] one.
  const int p = world().size();
  std::vector<float> mine(6);
  for (int i = 0; i < 6; ++i)
    mine[static_cast<size_t>(i)] = static_cast<float>(world().rank() * 10 + i);
  Tensor in = Tensor::from_vector(mine, {2, 3});
  Tensor out = Tensor::zeros({p, 2, 3}, DType::f32);
  world().all_gather(in, out);
  for (int q = 0; q < p; ++q)
    for (int i = 0; i < 6; ++i)
      EXPECT_EQ(out.data<float>()[q * 6 + i], static_cast<float>(q * 10 + i));
}

// CUDA tensors across ranks: the NCCL backend, and the MPI backend's pinned-host staging, run the
// same collective table as the CPU tests (collective_checks.h). Every test skips itself (on every
// rank together) where there is no GPU, or, for NCCL, fewer GPUs than ranks on the node.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>

#include "collective_checks.h"

#if STRATA_CUDA
#include <cuda_runtime.h>

#include "comm/launch_env.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_device.h"
#include "kernels/ops.h"
#if STRATA_HAVE_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif
#endif

using namespace strata;
using namespace strata::testing;

#if STRATA_CUDA

namespace {

// Plain cudaMalloc memory for the test tensors.
class TestCudaAllocator final : public Allocator {
 public:
  explicit TestCudaAllocator(int device) : device_(device) {}
  Device device() const override { return Device::cuda(device_); }
  void* allocate(size_t bytes) override {
    void* ptr = nullptr;
    STRATA_CUDA_CHECK(cudaSetDevice(device_));
    STRATA_CUDA_CHECK(cudaMalloc(&ptr, bytes == 0 ? 256 : bytes));
    return ptr;
  }
  void deallocate(void* ptr, size_t) override { cudaFree(ptr); }

 private:
  int device_;
};

// This rank's GPU, or -1 where the test must skip: decided together (a max over the world of
// "cannot"), so all ranks skip or none does and no rank waits in a collective alone.
int device_for_this_rank(bool one_gpu_per_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  const LaunchEnv env = read_launch_env();
  // Each process of the simulated GPU has a GPU of its own, whatever the node's rank count.
  const bool own_gpu = STRATA_GPUSIM || count >= env.local_size;
  const bool can = count > 0 && (!one_gpu_per_rank || own_gpu);
  Tensor cannot = Tensor::from_vector(std::vector<int32_t>{can ? 0 : 1}, {1});
  world().all_reduce(cannot, ReduceOp::max);
  if (cannot.data<int32_t>()[0] != 0) return -1;
  const int device = env.local_rank % count;
  STRATA_CUDA_CHECK(cudaSetDevice(device));
  return device;
}

const std::vector<DType> kNcclDtypes = {DType::f32, DType::f64, DType::bf16,
                                        DType::f16, DType::i32, DType::i64};

// The collective table, shortened (the CPU tests cover every variant on the MPI path).
void run_table(Communicator& comm, Allocator& allocator, const std::vector<DType>& dtypes) {
  for (DType dtype : dtypes) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      if (op == ReduceOp::avg && !is_floating(dtype)) continue;
      for (int64_t n : {1, 7, 1000, 65537}) {
        check_all_reduce(comm, allocator, {dtype, op, n, false, false}, 31);
        check_reduce_scatter(comm, allocator, {dtype, op, n, false, n == 1000}, 32);
      }
      check_all_reduce(comm, allocator, {dtype, op, 1000, true, false}, 33);
      check_reduce_scatter(comm, allocator, {dtype, op, 1000, true, false}, 34);
    }
    for (int64_t n : {1, 7, 1000, 65537}) {
      check_all_gather(comm, allocator, {dtype, ReduceOp::sum, n, false, n == 7}, 35);
      check_broadcast(comm, allocator, {dtype, ReduceOp::sum, n, n == 7, false}, comm.size() - 1,
                      36);
      check_ring(comm, allocator, {dtype, ReduceOp::sum, n, n == 1000, false}, false, 37);
    }
    check_all_gather(comm, allocator, {dtype, ReduceOp::sum, 1000, true, true}, 38);
    check_all_to_all(comm, allocator, {dtype, ReduceOp::sum, 0, false, false}, 1, 39);
    check_all_to_all(comm, allocator, {dtype, ReduceOp::sum, 0, true, false}, 1000, 40);
  }
  comm.barrier();
}

}  // namespace

#if STRATA_HAVE_NCCL
TEST(Nccl, CollectiveTable) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/true);
  if (device < 0) GTEST_SKIP() << "needs one GPU per rank";
  TestCudaAllocator gpu(device);
  NcclCommunicator comm("world", MPI_COMM_WORLD, device);
  EXPECT_EQ(comm.backend(), "nccl");
  EXPECT_EQ(comm.size(), world().size());
  run_table(comm, gpu, kNcclDtypes);
}

TEST(Nccl, PairwiseSendRecvAndErrors) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/true);
  if (device < 0) GTEST_SKIP() << "needs one GPU per rank";
  TestCudaAllocator gpu(device);
  NcclCommunicator comm("pp", MPI_COMM_WORLD, device);
  const int p = comm.size(), r = comm.rank();
  // Pipeline style: rank 0 sends, rank 1 receives (separate calls, opposite order on the peers).
  if (p >= 2 && r < 2) {
    std::vector<double> values(300);
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = input_value(DType::bf16, 41, 0, static_cast<int64_t>(i), p);
    if (r == 0) {
      comm.send(make_tensor(values, DType::bf16, gpu), 1);
    } else {
      Tensor x = Tensor::zeros({300}, DType::bf16, gpu);
      comm.recv_async(x, 0).wait();
      expect_values(x, values, "nccl send/recv");
    }
  }
  // CPU tensors go over MPI on the same ranks; u16 reductions are refused with the reason.
  Tensor cpu = Tensor::from_vector(std::vector<float>(4, static_cast<float>(r + 1)), {4});
  comm.all_reduce(cpu);
  EXPECT_EQ(cpu.data<float>()[3], static_cast<float>(p * (p + 1) / 2)) << "a CPU tensor's all-reduce";
  Tensor u16s = Tensor::zeros({4}, DType::u16, gpu);
  expect_contains(error_of([&] { comm.all_reduce(u16s); }), "NCCL cannot reduce u16");
  // Size checks work on NCCL too (they go over the bootstrap MPI communicator).
  if (p >= 2) {
    Tensor x = Tensor::zeros({r == 1 ? 1000 : 1024}, DType::f32, gpu);
    const std::string message = error_of([&] { comm.all_reduce(x); });
    expect_contains(message, "all_reduce on group 'pp'");
    expect_contains(message, "element counts differ across ranks");
  }
  comm.barrier();
}

TEST(Nccl, ProcessGroups) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/true);
  if (device < 0) GTEST_SKIP() << "needs one GPU per rank";
  TestCudaAllocator gpu(device);
  const int p = world().size();
  ProcessGrid grid(p, world().rank(), {.dp = p});
  ProcessGroups groups(grid, Backend::nccl, MPI_COMM_WORLD, device);
  check_all_reduce(groups.dp(), gpu, {DType::bf16, ReduceOp::avg, 1000, false, false}, 42);
  check_all_reduce(groups.tp(), gpu, {DType::f32, ReduceOp::sum, 1000, true, false}, 43);
}

#endif  // STRATA_HAVE_NCCL

// The MPI backend on CUDA tensors stages through pinned host memory; ranks may share a GPU.
TEST(MpiStaged, CollectiveTable) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/false);
  if (device < 0) GTEST_SKIP() << "needs a GPU";
  TestCudaAllocator gpu(device);
  run_table(world(), gpu, {DType::f32, DType::bf16, DType::f16, DType::i64, DType::u16});
}

// Tensors of a CudaDevice, whose ops run on its non-blocking compute stream: the communication
// must come after the work queued there (the input is written by an op just before), and the
// ops queued after it must see its result (read by an op just after), with no synchronisation by
// the caller. On the simulated GPU a copy or a collective that is not so ordered reads or leaves
// stale values, since stream work runs only when something waits for it.
static void expect_ordered_with_compute(Communicator& comm, CudaDevice& gpu) {
  const int p = comm.size(), r = comm.rank();
  const int64_t n = 1000;
  for (int round = 0; round < 3; ++round) {
    Tensor x = Tensor::zeros({n}, DType::f32, gpu);  // zero, then (queued) rank + 1 + round
    ops::fill(x, r + 1 + round);
    if (round == 1) {
      comm.all_reduce_async(x, ReduceOp::sum).wait();
    } else {
      comm.all_reduce(x, ReduceOp::sum);
    }
    ops::scale(x, 2.0);  // queued after the collective: must see the sum
    const double want = 2.0 * (p * (p + 1) / 2.0 + p * round);
    const Tensor got = x.to_cpu();
    for (int64_t i = 0; i < n; i += 111)
      ASSERT_EQ(got.data<float>()[i], want) << comm.backend() << " round " << round << " element " << i;
    // Out of place, and a gather whose input is written just before.
    Tensor part = Tensor::empty({7}, DType::f32, gpu), all = Tensor::empty({7 * p}, DType::f32, gpu);
    ops::fill(part, 10 * r + round);
    comm.all_gather(part, all);
    const Tensor gathered = all.to_cpu();
    for (int q = 0; q < p; ++q)
      ASSERT_EQ(gathered.data<float>()[q * 7 + 3], 10 * q + round)
          << comm.backend() << " round " << round << " from rank " << q;
  }
}

TEST(MpiStaged, OrderedWithTheComputeStream) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/false);
  if (device < 0) GTEST_SKIP() << "needs a GPU";
  CudaDevice gpu(device);
  expect_ordered_with_compute(world(), gpu);
}

#if STRATA_HAVE_NCCL
TEST(Nccl, OrderedWithTheComputeStream) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/true);
  if (device < 0) GTEST_SKIP() << "needs one GPU per rank";
  CudaDevice gpu(device);
  NcclCommunicator comm("world", MPI_COMM_WORLD, device);
  expect_ordered_with_compute(comm, gpu);
}

#if STRATA_GPUSIM
// The instrument itself: an all-reduce queued on a communication stream that does not wait for
// the compute stream's fill reads the value from before the fill (the zeros), which is how a
// missing event shows up in the tests above. On a GPU the result would depend on timing.
TEST(Nccl, APlantedMissingEventReadsStaleInputs) {
  const int device = device_for_this_rank(/*one_gpu_per_rank=*/true);
  if (device < 0) GTEST_SKIP() << "needs one GPU per rank";
  CudaDevice gpu(device);
  const int p = world().size();
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (world().rank() == 0) {
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  }
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, p, id, world().rank()), ncclSuccess);
  cudaStream_t side = nullptr;
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  Tensor x = Tensor::zeros({16}, DType::f32, gpu);
  gpu.synchronize();  // the zeros are there
  ops::fill(x, 1.0);  // queued on the compute stream, which `side` does not wait for
  ASSERT_EQ(ncclAllReduce(x.raw(), x.raw(), 16, ncclFloat32, ncclSum, comm, side), ncclSuccess);
  STRATA_CUDA_CHECK(cudaStreamSynchronize(side));
  gpu.synchronize();  // now the fill runs, after the all-reduce read its input
  const Tensor got = x.to_cpu();
  EXPECT_EQ(got.data<float>()[0], 1.0f) << "the fill ran last, over the sum";
  // With the event (what NcclCommunicator::begin records), the sum of the fills arrives.
  ops::fill(x, 1.0);
  cudaEvent_t ready = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  STRATA_CUDA_CHECK(cudaEventRecord(ready, gpu.stream()));
  STRATA_CUDA_CHECK(cudaStreamWaitEvent(side, ready, 0));
  ASSERT_EQ(ncclAllReduce(x.raw(), x.raw(), 16, ncclFloat32, ncclSum, comm, side), ncclSuccess);
  STRATA_CUDA_CHECK(cudaStreamSynchronize(side));
  EXPECT_EQ(x.to_cpu().data<float>()[0], static_cast<float>(p));
  cudaEventDestroy(ready);
  cudaStreamDestroy(side);
  ncclCommDestroy(comm);
}
#endif
#endif  // STRATA_HAVE_NCCL

#else

TEST(Nccl, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA backend (STRATA_CUDA=0)";
}

#endif

// The simulated GPU's own tests: that it catches what it is built to catch (a missing barrier, a
// host read of device memory, a missing stream synchronisation, a divergent barrier, an access out
// of bounds), and that its warp primitives, tensor-core and matrix-load emulation and streams mean
// what CUDA documents.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gpusim/control.h"
#include "kernels/cuda/common.cuh"

using strata::cuda::launch;

namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// Runs f under the three schedules the op tests use.
const std::vector<gpusim::Schedule> kSchedules = {
    {gpusim::Order::ascending, 0}, {gpusim::Order::descending, 0}, {gpusim::Order::random, 7}};

struct ScheduleGuard {
  gpusim::Schedule saved = gpusim::schedule();
  ~ScheduleGuard() { gpusim::set_schedule(saved); }
};

template <typename T>
std::vector<T> download(const T* device, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

template <typename T>
T* upload(const std::vector<T>& host) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return static_cast<T*>(p);
}

// ---- kernels for the tests ----

// Reverses each block's 256 values through shared memory; `barrier` false plants the bug of
// reading a neighbour's slot before it is written.
__global__ void reverse_kernel(const float* in, float* out, bool barrier) {
  __shared__ float tile[256];
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = in[blockIdx.x * 256 + t];
  if (barrier) __syncthreads();
  out[blockIdx.x * 256 + t] = tile[255 - t];
}

__global__ void warp_ops_kernel(const int* in, int* sums, unsigned* ballots, int* xor_read, int* down8) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int v = in[threadIdx.x];
  int s = v;
  for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
  sums[threadIdx.x] = s;
  ballots[threadIdx.x] = __ballot_sync(0xffffffffu, v % 3 == 0);
  xor_read[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 5);
  down8[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 3, 8);  // within segments of 8 lanes
  (void)lane;
}

// One warp multiplies A[16x16] (row-major bf16) by B[16x8] (stored [k][n], bf16) into D[16x8] f32,
// loading fragments per the PTX layout; `swap` plants the bug of exchanging registers a1 and a2.
__global__ void mma_kernel(const __nv_bfloat16* A, const __nv_bfloat16* B, float* D, bool swap) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  auto pair = [](__nv_bfloat16 lo, __nv_bfloat16 hi) {
    return uint32_t{__bfloat16_as_ushort(lo)} | (uint32_t{__bfloat16_as_ushort(hi)} << 16);
  };
  uint32_t a[4] = {pair(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                   pair(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                   pair(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                   pair(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
  if (swap) {
    const uint32_t tmp = a[1];
    a[1] = a[2];
    a[2] = tmp;
  }
  uint32_t b[2] = {pair(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]),
                   pair(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
  float c[4] = {0, 0, 0, 0}, d[4];
  gpusim::mma_m16n8k16_bf16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// ldmatrix.x4 of four 8x8 matrices stacked in shared memory, plain and transposed, against the
// fragments read one element at a time.
__global__ void ldmatrix_kernel(const uint16_t* in, uint32_t* plain, uint32_t* trans, uint32_t* expected_plain,
                                uint32_t* expected_trans) {
  __shared__ __align__(16) uint16_t m[4 * 64];
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 256; i += 32) m[i] = in[i];
  __syncthreads();
  uint32_t r[4], rt[4];
  gpusim::ldmatrix(r, 4, false, &m[lane * 8]);
  gpusim::ldmatrix(rt, 4, true, &m[lane * 8]);
  const int row = lane / 4, col = 2 * (lane % 4);
  for (int i = 0; i < 4; ++i) {
    plain[lane * 4 + i] = r[i];
    trans[lane * 4 + i] = rt[i];
    const uint16_t* mat = &m[i * 64];
    expected_plain[lane * 4 + i] = uint32_t{mat[row * 8 + col]} | (uint32_t{mat[row * 8 + col + 1]} << 16);
    expected_trans[lane * 4 + i] = uint32_t{mat[col * 8 + row]} | (uint32_t{mat[(col + 1) * 8 + row]} << 16);
  }
}

__global__ void write_kernel(float* out, int n, float value) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = value;
}

__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void out_of_bounds_kernel(float* out, int n) { out[n + 4096] = 1.0f; }

__global__ void cp_async_kernel(const float4* in, float4* before_wait, float4* after_wait) {
  __shared__ __align__(16) float4 tile[32];
  tile[threadIdx.x] = make_float4(-1, -1, -1, -1);
  gpusim::cp_async(&tile[threadIdx.x], &in[threadIdx.x], 16, 16);
  gpusim::cp_async_commit();
  before_wait[threadIdx.x] = tile[threadIdx.x];
  gpusim::cp_async_wait(0);
  after_wait[threadIdx.x] = tile[threadIdx.x];
}

// ---- tests ----

TEST(GpuSim, MissingBarrierChangesResultsAcrossOrders) {
  ScheduleGuard guard;
  std::vector<float> in(4 * 256);
  std::iota(in.begin(), in.end(), 0.0f);
  float* d_in = upload(in);
  float* d_out = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d_out), in.size() * sizeof(float)));
  auto run = [&](bool barrier) {
    std::vector<std::vector<float>> results;
    for (const auto& s : kSchedules) {
      gpusim::set_schedule(s);
      launch("reverse", &reverse_kernel, 4, 256, 0, nullptr, d_in, d_out, barrier);
      results.push_back(download(d_out, in.size()));
    }
    return results;
  };
  const auto good = run(true);
  for (const auto& r : good) {
    EXPECT_EQ(r, good[0]);
    EXPECT_EQ(r[0], 255.0f);
  }
  const auto bad = run(false);
  EXPECT_NE(bad[0], bad[1]) << "ascending and descending orders agree although the barrier is missing";
  EXPECT_NE(bad[0], good[0]);
  CUDA_OK(cudaFree(d_in));
  CUDA_OK(cudaFree(d_out));
}

TEST(GpuSim, WarpShufflesAndVotesFollowCuda) {
  std::vector<int> in(64);
  for (int i = 0; i < 64; ++i) in[static_cast<size_t>(i)] = (i * 7 + 3) % 50;
  int* d_in = upload(in);
  int *sums, *xor_read, *down8;
  unsigned* ballots;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&sums), 64 * sizeof(int)));
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&xor_read), 64 * sizeof(int)));
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&down8), 64 * sizeof(int)));
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&ballots), 64 * sizeof(unsigned)));
  launch("warp_ops", &warp_ops_kernel, 1, 64, 0, nullptr, d_in, sums, ballots, xor_read, down8);
  const auto s = download(sums, 64), x = download(xor_read, 64), d = download(down8, 64);
  const auto b = download(ballots, 64);
  for (int w = 0; w < 2; ++w) {
    int total = 0;
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l) {
      total += in[static_cast<size_t>(w * 32 + l)];
      if (in[static_cast<size_t>(w * 32 + l)] % 3 == 0) ballot |= 1u << l;
    }
    for (int l = 0; l < 32; ++l) {
      const size_t i = static_cast<size_t>(w * 32 + l);
      EXPECT_EQ(s[i], total);
      EXPECT_EQ(b[i], ballot);
      EXPECT_EQ(x[i], in[static_cast<size_t>(w * 32 + (l ^ 5))]);
      // Down by 3 within segments of 8: the last 3 lanes of a segment keep their own value.
      const int src = (l % 8) + 3 < 8 ? l + 3 : l;
      EXPECT_EQ(d[i], in[static_cast<size_t>(w * 32 + src)]) << "lane " << l;
    }
  }
  for (void* p : {static_cast<void*>(d_in), static_cast<void*>(sums), static_cast<void*>(xor_read),
                  static_cast<void*>(down8), static_cast<void*>(ballots)})
    CUDA_OK(cudaFree(p));
}

TEST(GpuSim, MmaFollowsThePtxFragmentLayout) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<__nv_bfloat16> A(16 * 16), B(16 * 8);
  for (auto& v : A) v = __float2bfloat16_rn(dist(rng));
  for (auto& v : B) v = __float2bfloat16_rn(dist(rng));
  std::vector<double> expected(16 * 8, 0.0);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 16; ++k)
        expected[static_cast<size_t>(i * 8 + j)] +=
            double(__bfloat162float(A[static_cast<size_t>(i * 16 + k)])) * __bfloat162float(B[static_cast<size_t>(k * 8 + j)]);
  auto* dA = upload(A);
  auto* dB = upload(B);
  float* dD = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dD), 16 * 8 * sizeof(float)));
  launch("mma", &mma_kernel, 1, 32, 0, nullptr, static_cast<const __nv_bfloat16*>(dA),
         static_cast<const __nv_bfloat16*>(dB), dD, false);
  auto D = download(dD, 16 * 8);
  for (size_t i = 0; i < D.size(); ++i) EXPECT_NEAR(D[i], expected[i], 1e-5 * (1 + std::abs(expected[i])));
  // A wrong fragment index gives a wrong product, here as on a GPU.
  launch("mma", &mma_kernel, 1, 32, 0, nullptr, static_cast<const __nv_bfloat16*>(dA),
         static_cast<const __nv_bfloat16*>(dB), dD, true);
  D = download(dD, 16 * 8);
  double worst = 0;
  for (size_t i = 0; i < D.size(); ++i) worst = std::max(worst, std::abs(D[i] - expected[i]));
  EXPECT_GT(worst, 0.1);
  CUDA_OK(cudaFree(dA));
  CUDA_OK(cudaFree(dB));
  CUDA_OK(cudaFree(dD));
}

TEST(GpuSim, LdmatrixGivesEachLaneItsFragment) {
  std::vector<uint16_t> in(256);
  std::iota(in.begin(), in.end(), uint16_t{1000});
  auto* d_in = upload(in);
  uint32_t* out[4];
  for (auto& p : out) CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), 128 * sizeof(uint32_t)));
  launch("ldmatrix", &ldmatrix_kernel, 1, 32, 0, nullptr, static_cast<const uint16_t*>(d_in), out[0], out[1], out[2],
         out[3]);
  EXPECT_EQ(download(out[0], 128), download(out[2], 128));
  EXPECT_EQ(download(out[1], 128), download(out[3], 128));
  EXPECT_NE(download(out[0], 128), download(out[1], 128));
  for (auto* p : out) CUDA_OK(cudaFree(p));
  CUDA_OK(cudaFree(d_in));
}

TEST(GpuSim, CpAsyncLandsOnlyAtTheWait) {
  std::vector<float4> in(32);
  for (int i = 0; i < 32; ++i) in[static_cast<size_t>(i)] = make_float4(float(i), 1, 2, 3);
  auto* d_in = upload(in);
  float4 *before, *after;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&before), 32 * sizeof(float4)));
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&after), 32 * sizeof(float4)));
  launch("cp_async", &cp_async_kernel, 1, 32, 0, nullptr, static_cast<const float4*>(d_in), before, after);
  const auto b = download(before, 32), a = download(after, 32);
  EXPECT_EQ(b[5].x, -1.0f);
  EXPECT_EQ(a[5].x, 5.0f);
  CUDA_OK(cudaFree(d_in));
  CUDA_OK(cudaFree(before));
  CUDA_OK(cudaFree(after));
}

TEST(GpuSim, StreamWorkRunsOnlyWhenSynchronised) {
  cudaStream_t compute, copy;
  CUDA_OK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking));
  const int n = 1000;
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(float)));
  float* host = nullptr;
  CUDA_OK(cudaMallocHost(reinterpret_cast<void**>(&host), n * sizeof(float)));

  // Planted bug: the copy stream reads what the compute stream writes, with no event between them.
  launch("write", &write_kernel, 4, 256, 0, compute, d, n, 3.0f);
  CUDA_OK(cudaMemcpyAsync(host, d, n * sizeof(float), cudaMemcpyDeviceToHost, copy));
  CUDA_OK(cudaStreamSynchronize(copy));
  EXPECT_TRUE(std::isnan(host[0])) << "the copy saw the kernel's result without being ordered after it";
  // Nor has the host's buffer changed before the host waits.
  launch("write", &write_kernel, 4, 256, 0, compute, d, n, 5.0f);
  CUDA_OK(cudaMemcpyAsync(host, d, n * sizeof(float), cudaMemcpyDeviceToHost, compute));
  EXPECT_NE(host[0], 5.0f);
  CUDA_OK(cudaStreamSynchronize(compute));
  EXPECT_EQ(host[0], 5.0f);

  // Fixed: an event orders the copy after the kernel.
  cudaEvent_t done;
  CUDA_OK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  launch("write", &write_kernel, 4, 256, 0, compute, d, n, 7.0f);
  CUDA_OK(cudaEventRecord(done, compute));
  CUDA_OK(cudaStreamWaitEvent(copy, done, 0));
  CUDA_OK(cudaMemcpyAsync(host, d, n * sizeof(float), cudaMemcpyDeviceToHost, copy));
  CUDA_OK(cudaStreamSynchronize(copy));
  EXPECT_EQ(host[n - 1], 7.0f);

  CUDA_OK(cudaEventDestroy(done));
  CUDA_OK(cudaFreeHost(host));
  CUDA_OK(cudaFree(d));
  CUDA_OK(cudaStreamDestroy(compute));
  CUDA_OK(cudaStreamDestroy(copy));
}

TEST(GpuSim, LegacyStreamOrdersBlockingStreams) {
  cudaStream_t blocking;
  CUDA_OK(cudaStreamCreate(&blocking));
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), 256 * sizeof(float)));
  launch("write", &write_kernel, 1, 256, 0, blocking, d, 256, 9.0f);
  float back = 0;
  CUDA_OK(cudaMemcpy(&back, d, sizeof back, cudaMemcpyDeviceToHost));  // legacy: waits for `blocking`
  EXPECT_EQ(back, 9.0f);
  CUDA_OK(cudaFree(d));
  CUDA_OK(cudaStreamDestroy(blocking));
}

TEST(GpuSim, HostReadOfDeviceMemoryCrashes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* d = nullptr;
        if (cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float)) != cudaSuccess) std::abort();
        volatile float x = d[3];  // the planted bug
        (void)x;
        std::exit(0);
      },
      "host code touched simulated device memory at 0x[0-9a-f]+ \\(byte 12 of a 256-byte allocation");
}

TEST(GpuSim, KernelOutOfBoundsAccessIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* d = nullptr;
        if (cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float)) != cudaSuccess) std::abort();
        launch("out_of_bounds", &out_of_bounds_kernel, 1, 1, 0, nullptr, d, 64);
        cudaDeviceSynchronize();
        std::exit(0);
      },
      "kernel 'out_of_bounds', block \\(0, 0, 0\\) thread \\(0, 0, 0\\), accessed device address");
}

TEST(GpuSim, DivergentBarrierIsAFault) {
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(float)));
  launch("divergent", &divergent_barrier_kernel, 1, 32, 0, nullptr, d);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(gpusim::last_fault().find("divergent"), std::string::npos) << gpusim::last_fault();
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 4), cudaErrorLaunchFailure) << "the fault is sticky";
  gpusim::clear_fault();
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(GpuSim, LaunchLimitsAreAnSm90s) {
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), 4096));
  EXPECT_THROW(launch("too_many_threads", &write_kernel, 1, 2048, 0, nullptr, d, 1, 0.0f), strata::Error);
  EXPECT_THROW(launch("big_shared", &write_kernel, 1, 32, 64 * 1024, nullptr, d, 1, 0.0f), strata::Error);
  CUDA_OK(cudaFuncSetAttribute(&write_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
  EXPECT_NO_THROW(launch("big_shared", &write_kernel, 1, 32, 64 * 1024, nullptr, d, 1, 0.0f));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaFree(d));
}

TEST(GpuSim, CopiesRefuseRangesOutsideAnAllocation) {
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), 100 * sizeof(float)));
  std::vector<float> host(200);
  EXPECT_EQ(cudaMemcpy(d, host.data(), 200 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue) << "wrong kind";
  cudaGetLastError();
  CUDA_OK(cudaFree(d));
}

TEST(GpuSim, FreshDeviceMemoryReadsAsNaN) {
  float* d = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d), 16 * sizeof(float)));
  const auto v = download(d, 16);
  for (float x : v) EXPECT_TRUE(std::isnan(x));
  CUDA_OK(cudaFree(d));
}

}  // namespace

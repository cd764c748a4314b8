// Top-k per row for the mixture-of-experts router (k is small: 1 to 8 experts of a few dozen).
// One block per row picks the k entries one at a time: round r takes the first entry, in the
// order "NaN, then larger, then lower index", among those after the entry of round r - 1. The
// order is total (indices differ), so every thread's and every warp's choice is the same whatever
// the order of the comparisons. O(k n / threads) per row: meant for small k, correct for any.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/topk.h"

namespace strata::cuda {
namespace {

constexpr unsigned kMaxThreads = 256;

// An entry of the row; index -1 is "none", which comes after every entry.
struct Candidate {
  float value;
  int32_t index;
};

// Whether a comes before b in the selection order.
__device__ __forceinline__ bool before(Candidate a, Candidate b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  const bool nan_a = a.value != a.value, nan_b = b.value != b.value;
  if (nan_a != nan_b) return nan_a;
  if (!nan_a && a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

__device__ __forceinline__ Candidate first_of(Candidate a, Candidate b) { return before(b, a) ? b : a; }

template <typename T>
__global__ void topk_kernel(const T* x, int64_t n, int64_t k, T* values, int32_t* indices) {
  __shared__ Candidate scratch[32];
  const int64_t r = blockIdx.x;
  const T* row = x + r * n;
  const unsigned warps = blockDim.x / 32;
  Candidate last{0.0f, -1};
  for (int64_t round = 0; round < k; ++round) {
    Candidate best{0.0f, -1};
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const Candidate c{to_float(row[j]), static_cast<int32_t>(j)};
      if ((last.index < 0 || before(last, c)) && before(c, best)) best = c;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const Candidate other{__shfl_xor_sync(0xffffffffu, best.value, offset),
                            __shfl_xor_sync(0xffffffffu, best.index, offset)};
      best = first_of(best, other);
    }
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = best;
    __syncthreads();
    best = scratch[0];
    for (unsigned w = 1; w < warps; ++w) best = first_of(best, scratch[w]);
    if (threadIdx.x == 0) {
      values[r * k + round] = row[best.index];
      indices[r * k + round] = best.index;
    }
    last = best;
    __syncthreads();  // before the next round's writes to scratch
  }
}

}  // namespace

void topk(const void* x, DType dtype, int64_t rows, int64_t n, int64_t k, void* values, int32_t* indices,
          cudaStream_t stream) {
  if (rows == 0) return;
  const int64_t warps = (n + 31) / 32;
  const auto threads = static_cast<unsigned>(warps > kMaxThreads / 32 ? kMaxThreads : warps * 32);
  with_floating(dtype, "topk", [&](auto tag) {
    using T = decltype(tag);
    launch("topk", &topk_kernel<T>, static_cast<unsigned>(rows), threads, 0, stream, static_cast<const T*>(x), n, k,
           static_cast<T*>(values), indices);
  });
}

}  // namespace strata::cuda

// Cross-entropy kernels, shard-aware as the CPU ones (kernels/cpu/cross_entropy.h). One block per
// row streams over the row once with an online max and sum of exponentials (Milakov & Gimelshein,
// "Online normalizer calculation for softmax"): each thread keeps (m, s) with s = sum exp(x - m)
// over its elements, rescaling s when m grows, and the block merges the pairs in a fixed order.
// No f32 copy of the row is made. Rows are read in 16-byte vectors after a scalar head that brings
// the row's address to a 16-byte boundary, then a scalar tail. The split of a row over the threads,
// and so the order of its sums, depends on n, the dtype and the row's offset from a 16-byte
// boundary (fixed by the tensor's layout: allocations are 16-byte aligned), never on timing.
//
// Special values come out as on the CPU, whose two passes give: NaN logits are skipped by the max
// and make the sum NaN; a +inf logit makes the sum NaN (exp(inf - inf)); -inf logits add nothing,
// unless every logit is -inf, where the sum is NaN (exp(-inf - -inf)).
#include <limits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cross_entropy.h"

namespace strata::cuda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr unsigned kMaxThreads = 512;

// Threads for rows of n elements of T: about one 16-byte vector each, a whole number of warps,
// at most kMaxThreads. A function of n and T alone, so the order of every sum is too.
template <typename T>
unsigned threads_for(int64_t n) {
  const int64_t vectors = (n + kVec<T> - 1) / kVec<T>;
  const int64_t warps = (vectors + 31) / 32;
  return static_cast<unsigned>(warps < 1 ? 32 : (warps > kMaxThreads / 32 ? kMaxThreads : warps * 32));
}

// A row of n elements at p: `head` scalar elements up to the first 16-byte boundary, then
// `vectors` aligned vectors of kVec<T>, then scalars to n. Without `vector`, all scalars.
struct RowSplit {
  int64_t head, vectors;
};
template <typename T>
__device__ __forceinline__ RowSplit split_row(const T* p, int64_t n, bool vector) {
  if (!vector) return {n, 0};
  const int64_t misaligned = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % 16) / static_cast<int64_t>(sizeof(T));
  int64_t head = misaligned == 0 ? 0 : kVec<T> - misaligned;
  if (head > n) head = n;
  return {head, (n - head) / kVec<T>};
}

// Calls f(j, logit_j) for this thread's elements of a row: thread t takes elements t, t + threads,
// ... of the head and the tail and vectors t, t + threads, ... of the body.
template <typename T, typename F>
__device__ __forceinline__ void for_each_logit(const T* row, int64_t n, F&& f) {
  const RowSplit split = split_row(row, n, true);
  const int64_t step = blockDim.x;
  for (int64_t j = threadIdx.x; j < split.head; j += step) f(j, to_float(row[j]));
  for (int64_t v = threadIdx.x; v < split.vectors; v += step) {
    const int64_t j = split.head + v * kVec<T>;
    const Vec<T> x = load_vec(row + j);
    for (int e = 0; e < kVec<T>; ++e) f(j + e, to_float(x.v[e]));
  }
  for (int64_t j = split.head + split.vectors * kVec<T> + threadIdx.x; j < n; j += step) f(j, to_float(row[j]));
}

// s = sum exp(x - m) over the elements seen, m their max (NaN skipped); (-inf, 0) for none.
struct Online {
  float max, sum;
};

__device__ __forceinline__ void add_logit(Online& o, float x) {
  if (x > o.max) {
    // The new element's own term is exp(x - x): 1, or NaN for x = +inf (as the CPU's).
    o.sum = o.sum * expf(o.max - x) + (x == kInf ? kNaN : 1.0f);
    o.max = x;
  } else if (x != -kInf) {
    o.sum += expf(x - o.max);
  }
}

// o's sum relative to a max m >= o.max; exact when they are equal (so -inf == -inf keeps 0).
__device__ __forceinline__ float rescaled(Online o, float m) { return o.max == m ? o.sum : o.sum * expf(o.max - m); }

// Symmetric in a and b, bit for bit, so every lane of a butterfly gets the same pair.
__device__ __forceinline__ Online merge(Online a, Online b) {
  const float m = b.max > a.max ? b.max : a.max;
  return {m, rescaled(a, m) + rescaled(b, m)};
}

// The (max, sum_exp) of a row of n logits, in every thread of the block.
template <typename T>
__device__ Online row_stats(const T* row, int64_t n) {
  __shared__ Online scratch[32];
  Online o{-kInf, 0.0f};
  for_each_logit(row, n, [&](int64_t, float x) { add_logit(o, x); });
  for (int offset = 16; offset > 0; offset /= 2) {
    const Online other{__shfl_xor_sync(0xffffffffu, o.max, offset), __shfl_xor_sync(0xffffffffu, o.sum, offset)};
    o = merge(o, other);
  }
  const unsigned warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = o;
  __syncthreads();
  o = scratch[0];
  for (unsigned w = 1; w < warps; ++w) o = merge(o, scratch[w]);
  // Every logit -inf (or NaN): the CPU's sum is exp(-inf - -inf) = NaN.
  if (o.max == -kInf && n > 0) o.sum = kNaN;
  return o;
}

// Per row of one shard: max, sum_exp, target_logit.
template <typename T, typename I>
__global__ void stats_kernel(const T* logits, const I* targets, int64_t n, int64_t vocab_start, float* max,
                             float* sum_exp, float* target_logit) {
  const int64_t r = blockIdx.x;
  const T* row = logits + r * n;
  const Online o = row_stats(row, n);
  if (threadIdx.x == 0) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    max[r] = o.max;
    sum_exp[r] = o.sum;
    target_logit[r] = t >= vocab_start && t < vocab_start + n ? to_float(row[t - vocab_start]) : 0.0f;
  }
}

// Per row of the whole vocabulary: lse, and loss = lse - logit of the target (0 ignored, NaN for a
// target outside [0, n)).
template <typename T, typename I>
__global__ void forward_kernel(const T* logits, const I* targets, int64_t n, float* loss, float* lse) {
  const int64_t r = blockIdx.x;
  const T* row = logits + r * n;
  const Online o = row_stats(row, n);
  if (threadIdx.x == 0) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const float l = o.max + logf(o.sum);
    lse[r] = l;
    loss[r] = t >= n ? kNaN : (t < 0 ? 0.0f : l - to_float(row[t]));
  }
}

// One thread per row, the shards in order, as the CPU's loop.
template <typename I>
__global__ void combine_kernel(const float* max, const float* sum_exp, const float* target_logit, const I* targets,
                               int64_t shards, int64_t rows, float* loss, float* lse) {
  const int64_t r = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float top = -kInf;
  for (int64_t s = 0; s < shards; ++s) {
    const float m = max[s * rows + r];
    top = top < m ? m : top;
  }
  float total = 0.0f, target = 0.0f;
  for (int64_t s = 0; s < shards; ++s) {
    const float m = max[s * rows + r];
    if (m > -kInf) total += sum_exp[s * rows + r] * expf(m - top);
    target += target_logit[s * rows + r];
  }
  const float l = total > 0.0f ? top + logf(total) : -kInf;
  lse[r] = l;
  loss[r] = targets[r] < 0 ? 0.0f : l - target;
}

// dlogits_j = (exp(logit_j - lse) - [j is the target's column]) * dloss; each thread reads an
// element (or vector) and writes the same one, so dlogits may be logits.
template <typename T, typename I>
__global__ void backward_kernel(const T* logits, const I* targets, int64_t n, int64_t vocab_start, const float* lse,
                                const float* dloss, bool vector, T* dlogits) {
  const int64_t r = blockIdx.x;
  const T* row = logits + r * n;
  T* grad = dlogits + r * n;
  const int64_t t = static_cast<int64_t>(targets[r]);
  const bool ignored = t < 0;
  const int64_t column = t >= vocab_start && t < vocab_start + n ? t - vocab_start : -1;
  const float lse_r = lse[r], dloss_r = dloss[r];
  auto gradient = [&](int64_t j, float x) {
    return ignored ? 0.0f : (expf(x - lse_r) - (j == column ? 1.0f : 0.0f)) * dloss_r;
  };
  const RowSplit split = split_row(row, n, vector);
  const int64_t step = blockDim.x;
  for (int64_t j = threadIdx.x; j < split.head; j += step) grad[j] = from_float<T>(gradient(j, to_float(row[j])));
  for (int64_t v = threadIdx.x; v < split.vectors; v += step) {
    const int64_t j = split.head + v * kVec<T>;
    const Vec<T> x = load_vec(row + j);
    Vec<T> g;
    for (int e = 0; e < kVec<T>; ++e) g.v[e] = from_float<T>(gradient(j + e, to_float(x.v[e])));
    store_vec(grad + j, g);
  }
  for (int64_t j = split.head + split.vectors * kVec<T> + threadIdx.x; j < n; j += step)
    grad[j] = from_float<T>(gradient(j, to_float(row[j])));
}

}  // namespace

void cross_entropy_stats(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                         int64_t vocab_shard, int64_t vocab_start, float* max, float* sum_exp, float* target_logit,
                         cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, "cross_entropy_stats", [&](auto t_tag) {
    using T = decltype(t_tag);
    with_index(index_dtype, "cross_entropy_stats", [&](auto i_tag) {
      using I = decltype(i_tag);
      launch("cross_entropy_stats", &stats_kernel<T, I>, static_cast<unsigned>(rows), threads_for<T>(vocab_shard), 0,
             stream, static_cast<const T*>(logits), static_cast<const I*>(targets), vocab_shard, vocab_start, max,
             sum_exp, target_logit);
    });
  });
}

void cross_entropy_combine(const float* max, const float* sum_exp, const float* target_logit, const void* targets,
                           DType index_dtype, int64_t shards, int64_t rows, float* loss, float* lse,
                           cudaStream_t stream) {
  if (rows == 0) return;
  constexpr unsigned threads = 256;
  with_index(index_dtype, "cross_entropy_combine", [&](auto i_tag) {
    using I = decltype(i_tag);
    launch("cross_entropy_combine", &combine_kernel<I>, blocks_for(rows, threads), threads, 0, stream, max, sum_exp,
           target_logit, static_cast<const I*>(targets), shards, rows, loss, lse);
  });
}

void cross_entropy_forward(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                           int64_t vocab, float* loss, float* lse, cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, "cross_entropy_forward", [&](auto t_tag) {
    using T = decltype(t_tag);
    with_index(index_dtype, "cross_entropy_forward", [&](auto i_tag) {
      using I = decltype(i_tag);
      launch("cross_entropy_forward", &forward_kernel<T, I>, static_cast<unsigned>(rows), threads_for<T>(vocab), 0,
             stream, static_cast<const T*>(logits), static_cast<const I*>(targets), vocab, loss, lse);
    });
  });
}

void cross_entropy_backward(const void* logits, DType dtype, const void* targets, DType index_dtype, int64_t rows,
                            int64_t vocab_shard, int64_t vocab_start, const float* lse, const float* dloss,
                            void* dlogits, cudaStream_t stream) {
  if (rows == 0) return;
  // Vectors need the two rows equally far from a 16-byte boundary (always so in place).
  const bool vector =
      (reinterpret_cast<uintptr_t>(logits) - reinterpret_cast<uintptr_t>(dlogits)) % 16 == 0;
  with_floating(dtype, "cross_entropy_backward", [&](auto t_tag) {
    using T = decltype(t_tag);
    with_index(index_dtype, "cross_entropy_backward", [&](auto i_tag) {
      using I = decltype(i_tag);
      launch("cross_entropy_backward", &backward_kernel<T, I>, static_cast<unsigned>(rows),
             threads_for<T>(vocab_shard), 0, stream, static_cast<const T*>(logits), static_cast<const I*>(targets),
             vocab_shard, vocab_start, lse, dloss, vector, static_cast<T*>(dlogits));
    });
  });
}

}  // namespace strata::cuda

// Embedding kernels. The forward copies one table row per block in 16-byte vectors when the rows
// allow it. The backward is deterministic without float atomics: each id in the shard becomes the
// key (row << 32) | position, the keys are sorted on the device (a bitonic sort: every key is
// distinct, so any correct sort gives the same order, position order within a row), and the first
// key of each row's run adds that row's dout rows into dtable in position order, one thread per
// column. That is the CPU's order of additions, with the same rounding after each, so both
// backends give the same bits.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/embedding.h"

namespace strata::cuda {
namespace {

constexpr unsigned kMaxThreads = 256;
// Keys no id produces (ids outside the shard, padding to a power of two): sorted to the end.
constexpr uint64_t kNoKey = ~uint64_t{0};
// The bitonic sort's shared-memory tile: 1024 keys (8 KiB), sorted by 512 threads, one pair each.
constexpr int64_t kTile = 1024;

// Threads for rows of `items` per block: a whole number of warps, at most kMaxThreads.
unsigned threads_for(int64_t items) {
  const int64_t warps = (items + 31) / 32;
  return static_cast<unsigned>(warps < 1 ? 32 : (warps > kMaxThreads / 32 ? kMaxThreads : warps * 32));
}

int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// out[i, :] = table[ids[i] - vocab_start, :] or 0; block i, threads over the columns.
template <typename T, typename I>
__global__ void forward_kernel(const I* ids, const T* table, int64_t vocab_start, int64_t vocab_shard, int64_t d,
                               bool vector, T* out) {
  const int64_t i = blockIdx.x;
  const int64_t row = static_cast<int64_t>(ids[i]) - vocab_start;
  const bool inside = row >= 0 && row < vocab_shard;
  const T* src = table + (inside ? row : 0) * d;
  T* dst = out + i * d;
  const T zero = from_float<T>(0.0f);
  if (vector) {
    for (int64_t v = threadIdx.x; v < d / kVec<T>; v += blockDim.x) {
      Vec<T> x;
      if (inside) {
        x = load_vec(src + v * kVec<T>);
      } else {
        for (int e = 0; e < kVec<T>; ++e) x.v[e] = zero;
      }
      store_vec(dst + v * kVec<T>, x);
    }
  } else {
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = inside ? src[j] : zero;
  }
}

// keys[p] = (row << 32) | p for ids in the shard, kNoKey otherwise and for p >= n (padding).
template <typename I>
__global__ void keys_kernel(const I* ids, int64_t n, int64_t padded, int64_t vocab_start, int64_t vocab_shard,
                            uint64_t* keys) {
  const int64_t p = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (p >= padded) return;
  uint64_t key = kNoKey;
  if (p < n) {
    const int64_t row = static_cast<int64_t>(ids[p]) - vocab_start;
    if (row >= 0 && row < vocab_shard) key = (static_cast<uint64_t>(row) << 32) | static_cast<uint64_t>(p);
  }
  keys[p] = key;
}

// One compare-exchange of the bitonic network: pair t of stage (k, j) is (i, i + j) with
// i = (t / j) * 2j + t % j, put in ascending order when bit k of i is clear, else descending.
// `base` is the global index of a[0], which decides the direction.
__device__ __forceinline__ void compare_exchange(uint64_t* a, int64_t base, int64_t t, int64_t j, int64_t k) {
  const int64_t i = (t / j) * 2 * j + t % j;
  const uint64_t x = a[i], y = a[i + j];
  const bool ascending = ((base + i) & k) == 0;
  if ((x > y) == ascending) {
    a[i] = y;
    a[i + j] = x;
  }
}

// Stages k = k_first, 2 k_first, ..., k_last with j from min(k, tile) / 2 down to 1, on one tile of
// keys in shared memory per block (tile = blockDim.x * 2 keys).
__global__ void bitonic_tile_kernel(uint64_t* keys, int64_t k_first, int64_t k_last) {
  __shared__ uint64_t tile[kTile];
  const int64_t size = int64_t{blockDim.x} * 2, base = int64_t{blockIdx.x} * size;
  for (int64_t e = threadIdx.x; e < size; e += blockDim.x) tile[e] = keys[base + e];
  __syncthreads();
  for (int64_t k = k_first; k <= k_last; k *= 2)
    for (int64_t j = (k < size ? k : size) / 2; j > 0; j /= 2) {
      compare_exchange(tile, base, threadIdx.x, j, k);
      __syncthreads();
    }
  for (int64_t e = threadIdx.x; e < size; e += blockDim.x) keys[base + e] = tile[e];
}

// One stage (k, j) over all keys in global memory, for j >= the tile; one pair a thread.
__global__ void bitonic_step_kernel(uint64_t* keys, int64_t pairs, int64_t j, int64_t k) {
  const int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (t < pairs) compare_exchange(keys, 0, t, j, k);
}

// Block p (of the sorted keys) starts a row's run when its key is an id's and the previous key's
// row differs; it then adds the run's dout rows, in position order, into that table row, each
// thread one column of the blockIdx.y chunk. Every addition is rounded to T, as the CPU's.
template <typename T>
__global__ void accumulate_kernel(const uint64_t* keys, int64_t n, const T* dout, int64_t d, T* dtable) {
  const int64_t p = blockIdx.x;
  const uint64_t key = keys[p];
  if (key == kNoKey || (p > 0 && (keys[p - 1] >> 32) == (key >> 32))) return;
  const int64_t column = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  if (column >= d) return;
  const uint64_t row = key >> 32;
  T* target = dtable + static_cast<int64_t>(row) * d + column;
  float sum = to_float(*target);
  for (int64_t q = p; q < n && (keys[q] >> 32) == row; ++q) {
    const int64_t position = static_cast<int64_t>(keys[q] & 0xffffffffu);
    sum = to_float(from_float<T>(sum + to_float(dout[position * d + column])));
  }
  *target = from_float<T>(sum);
}

// Sorts keys[0, padded) ascending (padded a power of two).
void bitonic_sort(uint64_t* keys, int64_t padded, cudaStream_t stream) {
  if (padded < 2) return;
  const int64_t tile = padded < kTile ? padded : kTile;
  const auto tiles = static_cast<unsigned>(padded / tile), tile_threads = static_cast<unsigned>(tile / 2);
  launch("embedding_sort_tiles", &bitonic_tile_kernel, tiles, tile_threads, 0, stream, keys, int64_t{2}, tile);
  constexpr unsigned threads = 256;
  for (int64_t k = 2 * tile; k <= padded; k *= 2) {
    for (int64_t j = k / 2; j >= tile; j /= 2)
      launch("embedding_sort_step", &bitonic_step_kernel, blocks_for(padded / 2, threads), threads, 0, stream, keys,
             padded / 2, j, k);
    launch("embedding_sort_merge", &bitonic_tile_kernel, tiles, tile_threads, 0, stream, keys, k, k);
  }
}

}  // namespace

void embedding_forward(const void* ids, DType index_dtype, int64_t n, const void* table, DType dtype,
                       int64_t vocab_start, int64_t vocab_shard, int64_t d, void* out, cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  with_floating(dtype, "embedding_forward", [&](auto t_tag) {
    using T = decltype(t_tag);
    with_index(index_dtype, "embedding_forward", [&](auto i_tag) {
      using I = decltype(i_tag);
      const bool vector = all_aligned16(table, out) && d % kVec<T> == 0;
      launch("embedding_forward", &forward_kernel<T, I>, static_cast<unsigned>(n),
             threads_for(vector ? d / kVec<T> : d), 0, stream, static_cast<const I*>(ids),
             static_cast<const T*>(table), vocab_start, vocab_shard, d, vector, static_cast<T*>(out));
    });
  });
}

int64_t embedding_backward_scratch(int64_t n) { return next_power_of_two(n); }

void embedding_backward(const void* dout, DType dtype, const void* ids, DType index_dtype, int64_t n,
                        int64_t vocab_start, int64_t vocab_shard, int64_t d, uint64_t* scratch, void* dtable,
                        cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  // Positions and rows each fit the 32 bits of their half of a key.
  STRATA_CHECK(n <= int64_t{0xffffffff} && vocab_shard <= int64_t{0xffffffff}, "embedding_backward: ", n,
               " ids and ", vocab_shard, " table rows must each be below 2^32 on CUDA");
  const int64_t padded = next_power_of_two(n);
  with_index(index_dtype, "embedding_backward", [&](auto i_tag) {
    using I = decltype(i_tag);
    constexpr unsigned threads = 256;
    launch("embedding_keys", &keys_kernel<I>, blocks_for(padded, threads), threads, 0, stream,
           static_cast<const I*>(ids), n, padded, vocab_start, vocab_shard, scratch);
  });
  bitonic_sort(scratch, padded, stream);
  with_floating(dtype, "embedding_backward", [&](auto t_tag) {
    using T = decltype(t_tag);
    const unsigned threads = threads_for(d);
    launch("embedding_backward", &accumulate_kernel<T>, dim3(static_cast<unsigned>(n), blocks_for(d, threads)),
           threads, 0, stream, static_cast<const uint64_t*>(scratch), n, static_cast<const T*>(dout), d,
           static_cast<T*>(dtable));
  });
}

}  // namespace strata::cuda

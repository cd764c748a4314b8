// Loops over elements in chunks that are one 16-byte vector where the layout allows it and single
// elements otherwise, with the chunk width a compile-time constant the loop body sees. The row and
// elementwise kernels (norms, activations, rope) write their arithmetic once, for a chunk of
// N = kVec<T> or N = 1 elements, instead of once for the vector body and again for the tail.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace strata::cuda {

// The width of a chunk, passed to a generic lambda as a value of this type.
template <int N>
struct Width {
  static constexpr int value = N;
};

// N consecutive elements at p as f32: one 16-byte access when N is T's vector width (p then
// 16-byte aligned), a plain one when N is 1.
template <int N, typename T>
__device__ __forceinline__ void load_n(const T* p, float* out) {
  if constexpr (N == 1) {
    out[0] = to_float(*p);
  } else {
    static_assert(N == kVec<T>, "load_n: a chunk is one element or one 16-byte vector");
    const Vec<T> v = load_vec(p);
    for (int i = 0; i < N; ++i) out[i] = to_float(v.v[i]);
  }
}

// The N values of `in` rounded to T (nearest even) and stored at p, as load_n reads them.
template <int N, typename T>
__device__ __forceinline__ void store_n(T* p, const float* in) {
  if constexpr (N == 1) {
    *p = from_float<T>(in[0]);
  } else {
    static_assert(N == kVec<T>, "store_n: a chunk is one element or one 16-byte vector");
    Vec<T> v;
    for (int i = 0; i < N; ++i) v.v[i] = from_float<T>(in[i]);
    store_vec(p, v);
  }
}

// Calls f(Width<N>{}, i) for the first index i of each chunk of [0, n) that this thread takes,
// threads `first`, first + stride, ... : chunks of kVec<T> when `vector` (the caller has checked
// that every pointer it will touch at those indices is 16-byte aligned), then the remainder one
// element at a time. The partition depends on n, vector and the stride only, so every sum a
// thread keeps over its chunks adds in the same order on every run.
template <typename T, typename F>
__device__ __forceinline__ void for_each_chunk(int64_t n, bool vector, int64_t first, int64_t stride, F&& f) {
  constexpr int V = kVec<T>;
  const int64_t chunks = vector ? n / V : 0;
  for (int64_t c = first; c < chunks; c += stride) f(Width<V>{}, c * V);
  for (int64_t i = chunks * V + first; i < n; i += stride) f(Width<1>{}, i);
}

// for_each_chunk over one row shared by the threads of a block.
template <typename T, typename F>
__device__ __forceinline__ void for_each_chunk_of_row(int64_t d, bool vector, F&& f) {
  for_each_chunk<T>(d, vector, int64_t{threadIdx.x}, int64_t{blockDim.x}, f);
}

// Threads for a block that shares `items` units of work: a whole number of warps, at least one,
// at most `max_threads` (a multiple of 32).
inline unsigned warps_for(int64_t items, unsigned max_threads) {
  const int64_t rounded = (items + 31) / 32 * 32;
  return rounded < 32 ? 32u : (rounded > max_threads ? max_threads : static_cast<unsigned>(rounded));
}

}  // namespace strata::cuda

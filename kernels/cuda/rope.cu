// Rotary position embedding, rotate-half pairing: one block per (batch, position) row, which first
// puts the cos and sin of its position's head_dim/2 angles in shared memory and then rotates
// every head of the row, 16-byte vectors of pairs at a time when the halves allow it.
//
// The angles are computed as the CPU computes them, in f64 (inv_freq = theta^(-2j/head_dim),
// a = p inv_freq, cos a and sin a), and only then rounded to f32: a position times a frequency is
// in the thousands of radians for long sequences, where an f32 angle is already off by ~1e-4.
#include "kernels/cuda/chunks.cuh"
#include "kernels/cuda/rope.h"

namespace strata::cuda {
namespace {

constexpr unsigned kMaxThreads = 256;

// x, y: [rows = batch * seq, heads, head_dim]; block b rotates row b (position offset + b % seq).
// Each thread reads both halves of its pairs before writing either, and no two threads share an
// element, so y may alias x.
template <typename T>
__global__ void rope_kernel(const T* x, int64_t seq, int64_t heads, int64_t head_dim, int64_t position_offset,
                            double theta, bool inverse, bool vector, T* y) {
  STRATA_DYNAMIC_SHARED(float, table);  // cos of pair j at table[j], sin at table[half + j]
  const int64_t half = head_dim / 2;
  const int64_t row = blockIdx.x;
  const double position = static_cast<double>(position_offset + row % seq);
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(head_dim));
    const double a = position * inv_freq;
    table[j] = static_cast<float>(cos(a));
    table[half + j] = static_cast<float>(inverse ? -sin(a) : sin(a));
  }
  __syncthreads();

  const T* xr = x + row * heads * head_dim;
  T* yr = y + row * heads * head_dim;
  // Pair p of the row is pair j = p % half of head p / half; a vector of pairs never crosses a
  // head, since the vector path needs half to be a multiple of the width.
  for_each_chunk_of_row<T>(heads * half, vector, [&](auto width, int64_t p) {
    constexpr int N = decltype(width)::value;
    const int64_t j = p % half, base = p / half * head_dim + j;
    float lo[N], hi[N], out_lo[N], out_hi[N];
    load_n<N>(xr + base, lo);
    load_n<N>(xr + base + half, hi);
    for (int i = 0; i < N; ++i) {
      const float c = table[j + i], s = table[half + j + i];
      out_lo[i] = lo[i] * c - hi[i] * s;
      out_hi[i] = hi[i] * c + lo[i] * s;
    }
    store_n<N>(yr + base, out_lo);
    store_n<N>(yr + base + half, out_hi);
  });
}

}  // namespace

void rope(const void* x, DType dtype, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          int64_t position_offset, double theta, bool inverse, void* y, cudaStream_t stream) {
  const int64_t rows = batch * seq, half = head_dim / 2;
  if (rows == 0 || heads == 0 || half == 0) return;
  with_floating(dtype, inverse ? "rope_backward" : "rope_forward", [&](auto tag) {
    using T = decltype(tag);
    const bool vector = half % kVec<T> == 0 && all_aligned16(x, y);
    const int64_t pairs = heads * half;
    const unsigned threads = warps_for(vector ? pairs / kVec<T> : pairs, kMaxThreads);
    launch(inverse ? "rope_backward" : "rope_forward", &rope_kernel<T>, static_cast<unsigned>(rows), threads,
           static_cast<size_t>(2 * half) * sizeof(float), stream, static_cast<const T*>(x), seq, heads, head_dim,
           position_offset, theta, inverse, vector, static_cast<T*>(y));
  });
}

}  // namespace strata::cuda

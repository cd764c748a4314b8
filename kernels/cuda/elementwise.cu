// Elementwise kernels and reductions. Each thread handles 16-byte vectors of elements (8 bf16/f16
// or 4 f32) in a grid-stride loop when every pointer is 16-byte aligned, then the tail one by one;
// every element is computed in f32 and rounded once on store.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.h"

#include <type_traits>

namespace strata::cuda {
namespace {

constexpr unsigned kThreads = 256;
// Enough blocks to fill an H100/H200 (132 SMs) several times over; grid-stride beyond that.
constexpr unsigned kMaxBlocks = 132 * 8;

unsigned grid_for(int64_t items) {
  const unsigned b = blocks_for(items, kThreads);
  return b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b);
}

// out[i] = f(a[i], b[i]) over n elements (b may be null for unary maps), vectorised when allowed.
template <typename A, typename B, typename Out, typename F>
__global__ void map_kernel(const A* a, const B* b, Out* out, int64_t n, bool vector, F f) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vector) {
    constexpr int V = kVec<A>;
    const int64_t vectors = n / V;
    for (int64_t v = first; v < vectors; v += stride) {
      const int64_t i = v * V;
      const Vec<A> va = load_vec(a + i);
      Out r[V];
      for (int j = 0; j < V; ++j) r[j] = from_float<Out>(f(to_float(va.v[j]), b ? to_float(b[i + j]) : 0.0f));
      if constexpr (sizeof(Out) == sizeof(A)) {
        Vec<Out> vo;
        for (int j = 0; j < V; ++j) vo.v[j] = r[j];
        store_vec(out + i, vo);
      } else {
        for (int j = 0; j < V; ++j) out[i + j] = r[j];
      }
    }
    done = vectors * V;
  }
  for (int64_t i = done + first; i < n; i += stride)
    out[i] = from_float<Out>(f(to_float(a[i]), b ? to_float(b[i]) : 0.0f));
}

struct Identity {
  __device__ float operator()(float x, float) const { return x; }
};
struct Add {
  __device__ float operator()(float x, float y) const { return x + y; }
};
struct Scale {
  float alpha;
  __device__ float operator()(float x, float) const { return x * alpha; }
};
// y + alpha x, with a = y and b = x.
struct Axpy {
  float alpha;
  __device__ float operator()(float y, float x) const { return y + alpha * x; }
};

template <typename T>
__global__ void fill_kernel(T* x, int64_t n, double value) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  T v;
  if constexpr (std::is_same_v<T, double>)
    v = value;
  else
    v = from_float<T>(static_cast<float>(value));
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) x[i] = v;
}

// Pass 1: block b sums elements b*threads + t, stepping by the grid, in f64; partial[b].
template <typename T>
__global__ void partial_sums_kernel(const T* x, int64_t n, bool squares, double* partial) {
  __shared__ double scratch[32];
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  double s = 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = to_float(x[i]);
    s += squares ? v * v : v;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Pass 2: one block adds the partials in a fixed order; *result = s, or += scale * s.
__global__ void final_sum_kernel(const double* partial, int blocks, double* result, bool accumulate, double scale) {
  __shared__ double scratch[32];
  double s = 0;
  for (int i = static_cast<int>(threadIdx.x); i < blocks; i += static_cast<int>(blockDim.x)) s += partial[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *result = accumulate ? *result + scale * s : s;
}

}  // namespace

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(src_dtype, "cast", [&](auto s_tag) {
    using S = decltype(s_tag);
    with_floating(dst_dtype, "cast", [&](auto d_tag) {
      using D = decltype(d_tag);
      const bool vector = sizeof(S) == sizeof(D) && aligned16(src) && aligned16(dst);
      launch("cast", &map_kernel<S, S, D, Identity>, grid_for(n / (vector ? kVec<S> : 1)), kThreads, 0, stream,
             static_cast<const S*>(src), static_cast<const S*>(nullptr), static_cast<D*>(dst), n, vector, Identity{});
    });
  });
}

void fill(void* x, DType dtype, int64_t n, double value, cudaStream_t stream) {
  if (n == 0) return;
  // f64 too: the device-side accumulators (a step's loss, gradient sums of squares) are f64.
  if (dtype == DType::f64) {
    launch("fill", &fill_kernel<double>, grid_for(n), kThreads, 0, stream, static_cast<double*>(x), n, value);
    return;
  }
  with_floating(dtype, "fill", [&](auto tag) {
    using T = decltype(tag);
    launch("fill", &fill_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<T*>(x), n, value);
  });
}

void add(const void* a, const void* b, void* out, DType dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(dtype, "add", [&](auto tag) {
    using T = decltype(tag);
    const bool vector = all_aligned16(a, b, out);
    launch("add", &map_kernel<T, T, T, Add>, grid_for(n / (vector ? kVec<T> : 1)), kThreads, 0, stream,
           static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, vector, Add{});
  });
}

void scale(void* x, DType dtype, int64_t n, double alpha, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(dtype, "scale", [&](auto tag) {
    using T = decltype(tag);
    const bool vector = aligned16(x);
    launch("scale", &map_kernel<T, T, T, Scale>, grid_for(n / (vector ? kVec<T> : 1)), kThreads, 0, stream,
           static_cast<const T*>(x), static_cast<const T*>(nullptr), static_cast<T*>(x), n, vector,
           Scale{static_cast<float>(alpha)});
  });
}

void axpy(double alpha, const void* x, DType x_dtype, void* y, DType y_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(y_dtype, "axpy", [&](auto y_tag) {
    using Y = decltype(y_tag);
    with_floating(x_dtype, "axpy", [&](auto x_tag) {
      using X = decltype(x_tag);
      const bool vector = all_aligned16(x, y);
      launch("axpy", &map_kernel<Y, X, Y, Axpy>, grid_for(n / (vector ? kVec<Y> : 1)), kThreads, 0, stream,
             static_cast<const Y*>(y), static_cast<const X*>(x), static_cast<Y*>(y), n, vector,
             Axpy{static_cast<float>(alpha)});
    });
  });
}

int64_t reduce_scratch(int64_t n) { return grid_for(n); }

void reduce_sum(const void* x, DType dtype, int64_t n, bool squares, double* scratch, double* result,
                cudaStream_t stream) {
  // The number of partial sums depends on n only, so the order of additions does too.
  const unsigned blocks = grid_for(n);
  with_floating(dtype, squares ? "sum_squares" : "sum", [&](auto tag) {
    using T = decltype(tag);
    launch("partial_sums", &partial_sums_kernel<T>, blocks, kThreads, 0, stream, static_cast<const T*>(x), n,
           squares, scratch);
  });
  launch("final_sum", &final_sum_kernel, 1, kThreads, 0, stream, static_cast<const double*>(scratch),
         static_cast<int>(blocks), result, false, 1.0);
}

void reduce_sum_into(const void* x, DType dtype, int64_t n, double scale, double* scratch, double* acc,
                     cudaStream_t stream) {
  const unsigned blocks = grid_for(n);
  with_floating(dtype, "sum_into", [&](auto tag) {
    using T = decltype(tag);
    launch("partial_sums", &partial_sums_kernel<T>, blocks, kThreads, 0, stream, static_cast<const T*>(x), n,
           false, scratch);
  });
  launch("final_sum", &final_sum_kernel, 1, kThreads, 0, stream, static_cast<const double*>(scratch),
         static_cast<int>(blocks), acc, true, scale);
}

}  // namespace strata::cuda

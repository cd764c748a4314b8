// Mixture-of-experts routing kernels: the CPU's computations (kernels/cpu/moe.h) on the device,
// deterministic and free of atomics.
//
// - route: one thread per token: softmax of its E scores in f64, then the top k by k passes, each
//   taking the first entry after the previous one in the total order "NaN, larger, lower index".
// - capacity: one block per expert scans the token-choices in fill order (every token's first
//   choice, then every second, ...): a ballot and a popcount per warp, the warps' counts in
//   shared memory, give each of the expert's choices its place; places past the capacity drop.
//   In the fixed layout the block writes the packed row e * rows_per_expert + place at once;
//   packed by load, a second kernel adds the load of the experts before e once every block's
//   count is known.
// - dispatch and combine's backward: one block per token-choice; combine and dispatch's backward
//   (one gather-sum kernel): one block per token. Threads run over the features in 16-byte
//   vectors where the rows allow it; sums in f64 in choice order, rounded once.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.h"

namespace strata::cuda {
namespace {

constexpr unsigned kMaxThreads = 256;

// Whole warps for `items` per block, at most kMaxThreads.
unsigned threads_for(int64_t items) {
  const int64_t warps = (items + 31) / 32;
  return static_cast<unsigned>(warps < 1 ? 32
                                         : (warps > kMaxThreads / 32 ? kMaxThreads : warps * 32));
}

template <typename T>
__device__ __forceinline__ double to_double(T x) {
  return static_cast<double>(to_float(x));
}

// Whether probability a (index ia) comes before b (ib) in the selection order.
__device__ __forceinline__ bool before(double a, int64_t ia, double b, int64_t ib) {
  const bool nan_a = a != a, nan_b = b != b;
  if (nan_a != nan_b) return nan_a;
  if (!nan_a && a != b) return a > b;
  return ia < ib;
}

// W consecutive elements of a row: one 16-byte access when W = kVec<T>, else W scalar ones.
template <typename T, int W>
struct Chunk {
  T v[W];
};
template <typename T, int W>
__device__ __forceinline__ Chunk<T, W> load_chunk(const T* p) {
  Chunk<T, W> c;
  if constexpr (W > 1) {
    const Vec<T> v = load_vec(p);
    for (int i = 0; i < W; ++i) c.v[i] = v.v[i];
  } else {
    c.v[0] = p[0];
  }
  return c;
}
template <typename T, int W>
__device__ __forceinline__ void store_chunk(T* p, const Chunk<T, W>& c) {
  if constexpr (W > 1) {
    Vec<T> v;
    for (int i = 0; i < W; ++i) v.v[i] = c.v[i];
    store_vec(p, v);
  } else {
    p[0] = c.v[0];
  }
}

template <typename T>
__global__ void route_kernel(const T* scores, int64_t rows, int64_t E, int64_t k, double* probs,
                             double* lse, int32_t* expert, double* gate) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T* s = scores + r * E;
    double* p = probs + r * E;
    double m = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      const double v = to_double(s[e]);
      m = m < v ? v : m;  // std::max's rule: a NaN score does not replace the maximum
    }
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += exp(to_double(s[e]) - m);
    const double l = m + log(sum);
    lse[r] = l;
    for (int64_t e = 0; e < E; ++e) p[e] = exp(to_double(s[e]) - l);
    int64_t last = -1;
    double total = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if ((last < 0 || before(p[last], last, p[e], e)) &&
            (best < 0 || before(p[e], e, p[best], best)))
          best = e;
      expert[r * k + j] = static_cast<int32_t>(best);
      total += p[best];
      last = best;
    }
    if (k == 1) total = 1.0;  // Switch: the gate is p itself
    for (int64_t j = 0; j < k; ++j) gate[r * k + j] = p[expert[r * k + j]] / total;
  }
}

__global__ void capacity_kernel(const int32_t* expert, int64_t rows, int64_t k, int64_t E,
                                int64_t capacity, int64_t rows_per_expert, int32_t* row,
                                int64_t* counts) {
  __shared__ int32_t warp_count[32];
  const int32_t e = static_cast<int32_t>(blockIdx.x);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t n = rows * k;
  int64_t base = 0;  // this expert's choices before the chunk (the same in every thread)
  for (int64_t start = 0; start < n; start += blockDim.x) {
    // Fill order t: choice j = t / rows of token r = t % rows.
    const int64_t t = start + threadIdx.x;
    const int64_t c = t < n ? (t % rows) * k + t / rows : -1;
    const bool mine = c >= 0 && expert[c] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int64_t place = base + __popc(ballot & ((1u << lane) - 1u)), chunk = 0;
    for (unsigned w = 0; w < warps; ++w) {
      if (w < warp) place += warp_count[w];
      chunk += warp_count[w];
    }
    if (mine) row[c] = place < capacity ? static_cast<int32_t>(e * rows_per_expert + place) : -1;
    base += chunk;
    __syncthreads();  // every thread has read warp_count before the next chunk writes it
  }
  if (threadIdx.x == 0) {
    counts[e] = base;
    counts[E + e] = base < capacity ? base : capacity;
  }
}

// Packed by load: a kept choice's place plus the load of the experts before its own.
__global__ void pack_by_load_kernel(const int32_t* expert, const int64_t* counts, int64_t n,
                                    int64_t E, int32_t* row) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < n;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (row[c] < 0) continue;
    int64_t at = row[c];
    for (int32_t e = 0; e < expert[c]; ++e) at += counts[E + e];
    row[c] = static_cast<int32_t>(at);
  }
}

__global__ void accumulate_kernel(const int64_t* counts, const double* losses, int64_t E,
                                  double* sum) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < 2 * E + 2;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    sum[i] += i < 2 * E ? static_cast<double>(counts[i]) : losses[i - 2 * E];
}

__global__ void losses_kernel(const double* probs, const double* lse, const int64_t* counts,
                              int64_t rows, int64_t E, int64_t k, double* losses) {
  __shared__ double scratch[32];
  double aux = 0;
  for (int64_t e = 0; e < E; ++e) {
    double part = 0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) part += probs[r * E + e];
    const double mean_p = block_sum(part, scratch) / static_cast<double>(rows);
    const double f = static_cast<double>(counts[e]) / static_cast<double>(rows * k);
    aux += static_cast<double>(E) * f * mean_p;
  }
  double part = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) part += lse[r] * lse[r];
  const double z = block_sum(part, scratch) / static_cast<double>(rows);
  if (threadIdx.x == 0) {
    losses[0] = aux;
    losses[1] = z;
  }
}

// Block c: packed[row[c]] = x[c / k].
template <typename T, int W>
__global__ void dispatch_kernel(const T* x, const int32_t* row, int64_t k, int64_t d, T* packed) {
  const int64_t c = blockIdx.x;
  if (row[c] < 0) return;
  const T* src = x + (c / k) * d;
  T* dst = packed + static_cast<int64_t>(row[c]) * d;
  for (int64_t g = threadIdx.x; g < d / W; g += blockDim.x)
    store_chunk<T, W>(dst + g * W, load_chunk<T, W>(src + g * W));
}

// Block r: y[r] = sum over r's kept choices c of w(c) rows_in[row[c]] (+ add[r]), w = gate or 1:
// combine (with the gates) and dispatch's backward (without, adding the router's dx).
template <typename T, int W>
__global__ void gather_sum_kernel(const T* rows_in, const int32_t* row, const double* gate,
                                  const T* add, int64_t k, int64_t d, T* y) {
  const int64_t r = blockIdx.x;
  for (int64_t g = threadIdx.x; g < d / W; g += blockDim.x) {
    double acc[W] = {};
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = r * k + j;
      if (row[c] < 0) continue;
      const Chunk<T, W> o = load_chunk<T, W>(rows_in + static_cast<int64_t>(row[c]) * d + g * W);
      for (int i = 0; i < W; ++i) acc[i] += gate ? gate[c] * to_double(o.v[i]) : to_double(o.v[i]);
    }
    if (add) {
      const Chunk<T, W> a = load_chunk<T, W>(add + r * d + g * W);
      for (int i = 0; i < W; ++i) acc[i] += to_double(a.v[i]);
    }
    Chunk<T, W> result;
    for (int i = 0; i < W; ++i) result.v[i] = from_double<T>(acc[i]);
    store_chunk<T, W>(y + r * d + g * W, result);
  }
}

// Block c: dout[row[c]] = gate[c] dy[c / k], dgate[c] = dy[c / k] . out[row[c]].
template <typename T, int W>
__global__ void combine_backward_kernel(const T* dy, const T* out, const int32_t* rows_of,
                                        const double* gate, int64_t k, int64_t d, T* dout,
                                        double* dgate) {
  __shared__ double scratch[32];
  const int64_t c = blockIdx.x;
  if (rows_of[c] < 0) {  // the whole block leaves
    if (threadIdx.x == 0) dgate[c] = 0;
    return;
  }
  const int64_t row = rows_of[c];
  const T* dyr = dy + (c / k) * d;
  double dot = 0;
  for (int64_t g = threadIdx.x; g < d / W; g += blockDim.x) {
    const Chunk<T, W> a = load_chunk<T, W>(dyr + g * W),
                      o = load_chunk<T, W>(out + row * d + g * W);
    Chunk<T, W> result;
    for (int i = 0; i < W; ++i) {
      result.v[i] = from_double<T>(gate[c] * to_double(a.v[i]));
      dot += to_double(a.v[i]) * to_double(o.v[i]);
    }
    store_chunk<T, W>(dout + row * d + g * W, result);
  }
  dot = block_sum(dot, scratch);
  if (threadIdx.x == 0) dgate[c] = dot;
}

// dp[r, e]: the gates' part (at most one of the token's distinct choices is e), then load
// balancing.
__device__ __forceinline__ double router_dp(int64_t e, const int32_t* expert, const double* dgate,
                                            int64_t k, double chosen_p, double weighted,
                                            double aux_term) {
  double dp = 0;
  for (int64_t j = 0; j < k; ++j)
    if (expert[j] == e) dp += k == 1 ? dgate[j] : (dgate[j] - weighted) / chosen_p;
  return dp + aux_term;
}

template <typename T>
__global__ void router_backward_kernel(const double* probs, const double* lse,
                                       const int32_t* expert, const double* gate,
                                       const double* dgate, const int64_t* counts, int64_t rows,
                                       int64_t E, int64_t k, double loss_scale, double aux_coef,
                                       double z_coef, T* dscores) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double* p = probs + r * E;
    const int32_t* ex = expert + r * k;
    const double* dg = dgate + r * k;
    double chosen_p = 0, weighted = 0;
    for (int64_t j = 0; j < k && k > 1; ++j) {
      chosen_p += p[ex[j]];
      weighted += dg[j] * gate[r * k + j];
    }
    auto aux_term = [&](int64_t e) {
      return aux_coef > 0 ? loss_scale * aux_coef * static_cast<double>(E) *
                                (static_cast<double>(counts[e]) / static_cast<double>(rows * k)) /
                                static_cast<double>(rows)
                          : 0.0;
    };
    double inner = 0;
    for (int64_t e = 0; e < E; ++e)
      inner += p[e] * router_dp(e, ex, dg, k, chosen_p, weighted, aux_term(e));
    const double z = loss_scale * z_coef * 2.0 * lse[r] / static_cast<double>(rows);
    for (int64_t e = 0; e < E; ++e) {
      const double dp = router_dp(e, ex, dg, k, chosen_p, weighted, aux_term(e));
      dscores[r * E + e] = from_double<T>(p[e] * (dp - inner) + z * p[e]);
    }
  }
}

// Calls f(W) with W = kVec<T> when every row pointer allows 16-byte access and d is a multiple of
// it, else W = 1; and the threads for d / W chunks a row.
template <typename T, typename F, typename... P>
void with_width(int64_t d, F&& f, const P*... rows) {
  constexpr int V = kVec<T>;
  if (d % V == 0 && all_aligned16(rows...))
    f(std::integral_constant<int, V>{}, threads_for(d / V));
  else
    f(std::integral_constant<int, 1>{}, threads_for(d));
}

// The gather-sum launch of combine and dispatch's backward (either of gate, add may be null).
void gather_sum(const char* name, const void* rows_in, DType dtype, const int32_t* row,
                const double* gate, const void* add, int64_t rows, int64_t k, int64_t d, void* y,
                cudaStream_t stream) {
  if (rows == 0 || d == 0) return;
  with_floating(dtype, name, [&](auto tag) {
    using T = decltype(tag);
    auto run = [&](auto width, unsigned threads) {
      launch(name, &gather_sum_kernel<T, decltype(width)::value>, static_cast<unsigned>(rows),
             threads, 0, stream, static_cast<const T*>(rows_in), row, gate,
             static_cast<const T*>(add), k, d, static_cast<T*>(y));
    };
    if (add)
      with_width<T>(d, run, rows_in, add, y);
    else
      with_width<T>(d, run, rows_in, y);
  });
}

}  // namespace

void moe_route(const void* scores, DType dtype, int64_t rows, int64_t E, int64_t k, double* probs,
               double* lse, int32_t* expert, double* gate, cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, "moe_route", [&](auto tag) {
    using T = decltype(tag);
    launch("moe_route", &route_kernel<T>, stride_grid(rows), kStrideThreads, 0, stream,
           static_cast<const T*>(scores), rows, E, k, probs, lse, expert, gate);
  });
}

void moe_capacity(const int32_t* expert, int64_t rows, int64_t k, int64_t E, int64_t capacity,
                  int64_t rows_per_expert, int32_t* row, int64_t* counts, cudaStream_t stream) {
  if (E == 0) return;  // no experts: nothing to count (a grid of 0 blocks is not a launch)
  launch("moe_capacity", &capacity_kernel, static_cast<unsigned>(E), kMaxThreads, 0, stream, expert,
         rows, k, E, capacity, rows_per_expert, row, counts);
  if (rows_per_expert == 0 && rows * k > 0)
    launch("moe_capacity", &pack_by_load_kernel, stride_grid(rows * k), kStrideThreads, 0, stream,
           expert, counts, rows * k, E, row);
}

void moe_routing_losses(const double* probs, const double* lse, const int64_t* counts, int64_t rows,
                        int64_t E, int64_t k, double* losses, cudaStream_t stream) {
  launch("moe_routing_losses", &losses_kernel, 1u, kMaxThreads, 0, stream, probs, lse, counts, rows,
         E, k, losses);
}

void moe_routing_accumulate(const int64_t* counts, const double* losses, int64_t E, double* sum,
                            cudaStream_t stream) {
  launch("moe_routing_accumulate", &accumulate_kernel, stride_grid(2 * E + 2), kStrideThreads, 0,
         stream, counts, losses, E, sum);
}

void moe_dispatch(const void* x, DType dtype, const int32_t* row, int64_t rows, int64_t k, int64_t d,
                  void* packed, cudaStream_t stream) {
  if (rows == 0 || d == 0) return;
  with_floating(dtype, "moe_dispatch", [&](auto tag) {
    using T = decltype(tag);
    with_width<T>(
        d,
        [&](auto width, unsigned threads) {
          launch("moe_dispatch", &dispatch_kernel<T, decltype(width)::value>,
                 static_cast<unsigned>(rows * k), threads, 0, stream, static_cast<const T*>(x), row,
                 k, d, static_cast<T*>(packed));
        },
        x, packed);
  });
}

void moe_combine(const void* out, DType dtype, const int32_t* row, const double* gate, int64_t rows,
                 int64_t k, int64_t d, void* y, cudaStream_t stream) {
  gather_sum("moe_combine", out, dtype, row, gate, nullptr, rows, k, d, y, stream);
}

void moe_combine_backward(const void* dy, const void* out, DType dtype, const int32_t* row,
                          const double* gate, int64_t rows, int64_t k, int64_t d, void* dout,
                          double* dgate, cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, "moe_combine_backward", [&](auto tag) {
    using T = decltype(tag);
    with_width<T>(
        d,
        [&](auto width, unsigned threads) {
          launch("moe_combine_backward", &combine_backward_kernel<T, decltype(width)::value>,
                 static_cast<unsigned>(rows * k), threads, 0, stream, static_cast<const T*>(dy),
                 static_cast<const T*>(out), row, gate, k, d, static_cast<T*>(dout), dgate);
        },
        dy, out, dout);
  });
}

void moe_dispatch_backward(const void* din, DType dtype, const int32_t* row, const void* add,
                           int64_t rows, int64_t k, int64_t d, void* dx, cudaStream_t stream) {
  gather_sum("moe_dispatch_backward", din, dtype, row, nullptr, add, rows, k, d, dx, stream);
}

void moe_router_backward(const double* probs, const double* lse, const int32_t* expert,
                         const double* gate, const double* dgate, const int64_t* counts,
                         int64_t rows, int64_t E, int64_t k, double loss_scale, double aux_coef,
                         double z_coef, void* dscores, DType dtype, cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, "moe_router_backward", [&](auto tag) {
    using T = decltype(tag);
    launch("moe_router_backward", &router_backward_kernel<T>, stride_grid(rows), kStrideThreads, 0,
           stream, probs, lse, expert, gate, dgate, counts, rows, E, k, loss_scale, aux_coef,
           z_coef, static_cast<T*>(dscores));
  });
}

}  // namespace strata::cuda

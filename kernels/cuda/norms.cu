// LayerNorm and RMSNorm over the last dimension: one block per row for the forward pass and for
// dx, 16-byte vector accesses when the rows allow them, f32 arithmetic and block reductions.
// The formulas are kernels/cpu/norms.h's; `kLayer` selects LayerNorm (centred, optional bias) or
// RMSNorm (uncentred, no bias) in each kernel, which are otherwise the same passes over a row.
//
// Parameter gradients without atomics: backward block b takes the rows [b R, (b + 1) R) in order
// (R fixed by the row count alone) and keeps its own partial sums of dweight and dbias in f32
// scratch, partial[b][j]; a second kernel adds the partials of each column in block order into
// dweight[j]. The order of every addition is fixed by (rows, d), so each run gives the same bits.
#include "kernels/cuda/chunks.cuh"
#include "kernels/cuda/norms.h"

namespace strata::cuda {
namespace {

// Threads of a row block at most; fewer, in whole warps, when the row has fewer chunks.
constexpr unsigned kMaxRowThreads = 256;
// Backward blocks at most: a few per SM of an H100/H200, each over a run of rows, and the size of
// the partial-sum scratch (blocks * d floats per parameter gradient).
constexpr int64_t kMaxBackwardBlocks = 512;
// Threads of the kernel that adds the partials, one column each.
constexpr unsigned kColumnThreads = 256;

int64_t rows_per_block(int64_t rows) { return (rows + kMaxBackwardBlocks - 1) / kMaxBackwardBlocks; }
int64_t backward_blocks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_block(rows) - 1) / rows_per_block(rows);
}

// Row r of v, where v is x or (with residual_in) residual_out = round(x + residual_in), which this
// kernel stores first; then, with mean = sum_j v_j / d (LayerNorm; 0 for RMSNorm),
//   rstd = 1 / sqrt(sum_j (v_j - mean)^2 / d + eps),  y_j = (v_j - mean) * rstd * weight_j + bias_j.
// Each thread rereads only the elements it stored itself, so no barrier is needed between passes.
template <typename T, bool kLayer>
__global__ void norm_forward_kernel(const T* x, const T* residual_in, const T* weight, const T* bias, int64_t d,
                                    float eps, bool vector, T* residual_out, T* y, float* mean, float* rstd) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * d;
  const T* addr = residual_in ? residual_in + r * d : nullptr;
  T* sumr = residual_in ? residual_out + r * d : nullptr;
  const T* vr = residual_in ? sumr : xr;
  T* yr = y + r * d;
  const float inv_d = 1.0f / static_cast<float>(d);

  float first_sum = 0;  // sum of v (LayerNorm) or of v^2 (RMSNorm)
  for_each_chunk_of_row<T>(d, vector, [&](auto width, int64_t j) {
    constexpr int N = decltype(width)::value;
    float v[N];
    load_n<N>(xr + j, v);
    if (addr) {
      float add[N];
      load_n<N>(addr + j, add);
      // The norm is taken of the sum as stored, rounded to T, as add then norm would see it.
      for (int i = 0; i < N; ++i) v[i] = to_float(from_float<T>(v[i] + add[i]));
      store_n<N>(sumr + j, v);
    }
    for (int i = 0; i < N; ++i) first_sum += kLayer ? v[i] : v[i] * v[i];
  });
  first_sum = block_sum(first_sum, scratch);

  float mu = 0, squares = first_sum;
  if constexpr (kLayer) {
    // Two passes (mean, then squared deviations): no cancellation of E[v^2] - E[v]^2.
    mu = first_sum * inv_d;
    float deviations = 0;
    for_each_chunk_of_row<T>(d, vector, [&](auto width, int64_t j) {
      constexpr int N = decltype(width)::value;
      float v[N];
      load_n<N>(vr + j, v);
      for (int i = 0; i < N; ++i) deviations += (v[i] - mu) * (v[i] - mu);
    });
    squares = block_sum(deviations, scratch);
  }
  const float rs = 1.0f / sqrtf(squares * inv_d + eps);

  for_each_chunk_of_row<T>(d, vector, [&](auto width, int64_t j) {
    constexpr int N = decltype(width)::value;
    float v[N], w[N], b[N] = {};
    load_n<N>(vr + j, v);
    load_n<N>(weight + j, w);
    if (bias) load_n<N>(bias + j, b);
    for (int i = 0; i < N; ++i) v[i] = (v[i] - mu) * rs * w[i] + b[i];
    store_n<N>(yr + j, v);
  });
  if (threadIdx.x == 0) {
    if (mean) mean[r] = mu;
    rstd[r] = rs;
  }
}

// dx for the rows [r0, r1) of this block, one row at a time, and the block's partial parameter
// gradients over those rows. With g = dy * weight:
//   LayerNorm: xhat = (x - mean) rstd, dx = rstd (g - mean_j g - xhat mean_j(g xhat)),
//              partial_weight += dy xhat, partial_bias += dy;
//   RMSNorm:   dx = rstd g - x rstd^3 mean_j(g x), partial_weight += dy x rstd.
// With dresidual (the fused residual add's backward), dx = round(round(dx) + dresidual): the
// norm's gradient rounded to T as the plain kernel stores it, then added as the add kernel does,
// with __fadd_rn so that no FMA contraction with the product before it changes the bits. A thread
// reads dresidual only where it writes dx, so dx may alias it.
// A thread updates only the partial columns it takes in every row (the same chunks each time).
template <typename T, bool kLayer>
__global__ void norm_backward_kernel(const T* dy, const T* dresidual, const T* x, const T* weight, const float* mean,
                                     const float* rstd, int64_t rows, int64_t d, int64_t rows_per_block, bool vector,
                                     T* dx, float* partial_weight, float* partial_bias) {
  __shared__ float scratch[32];
  const int64_t r0 = int64_t{blockIdx.x} * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float* pw = partial_weight + int64_t{blockIdx.x} * d;
  float* pb = partial_bias ? partial_bias + int64_t{blockIdx.x} * d : nullptr;
  const float inv_d = 1.0f / static_cast<float>(d);

  for (int64_t r = r0; r < r1; ++r) {
    const T* dyr = dy + r * d;
    const T* xr = x + r * d;
    const float mu = kLayer ? mean[r] : 0.0f, rs = rstd[r];
    float g_sum = 0, gx_sum = 0;  // sum_j g, and sum_j g xhat (LayerNorm) or g x (RMSNorm)
    for_each_chunk_of_row<T>(d, vector, [&](auto width, int64_t j) {
      constexpr int N = decltype(width)::value;
      float g[N], w[N], xv[N];
      load_n<N>(dyr + j, g);
      load_n<N>(weight + j, w);
      load_n<N>(xr + j, xv);
      for (int i = 0; i < N; ++i) {
        g[i] *= w[i];
        if constexpr (kLayer) {
          g_sum += g[i];
          gx_sum += g[i] * ((xv[i] - mu) * rs);
        } else {
          gx_sum += g[i] * xv[i];
        }
      }
    });
    float g_mean = 0;
    if constexpr (kLayer) g_mean = block_sum(g_sum, scratch) * inv_d;
    const float gx_mean = block_sum(gx_sum, scratch) * inv_d;
    const float rs3 = rs * rs * rs;
    const bool first = r == r0;

    for_each_chunk_of_row<T>(d, vector, [&](auto width, int64_t j) {
      constexpr int N = decltype(width)::value;
      float dyv[N], w[N], xv[N], out[N];
      load_n<N>(dyr + j, dyv);
      load_n<N>(weight + j, w);
      load_n<N>(xr + j, xv);
      for (int i = 0; i < N; ++i) {
        const float g = dyv[i] * w[i];
        float term;
        if constexpr (kLayer) {
          const float xhat = (xv[i] - mu) * rs;
          out[i] = rs * (g - g_mean - xhat * gx_mean);
          term = dyv[i] * xhat;
          if (pb) pb[j + i] = first ? dyv[i] : pb[j + i] + dyv[i];
        } else {
          out[i] = rs * g - xv[i] * rs3 * gx_mean;
          term = dyv[i] * xv[i] * rs;
        }
        pw[j + i] = first ? term : pw[j + i] + term;
      }
      if (dresidual) {
        float dr[N];
        load_n<N>(dresidual + r * d + j, dr);
        for (int i = 0; i < N; ++i) out[i] = __fadd_rn(to_float(from_float<T>(out[i])), dr[i]);
      }
      store_n<N>(dx + r * d + j, out);
    });
  }
}

// param[j] += sum_b partial[b][j], the blocks added in order.
template <typename T>
__global__ void add_partials_kernel(const float* partial, int64_t blocks, int64_t d, T* param) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float s = 0;
  for (int64_t b = 0; b < blocks; ++b) s += partial[b * d + j];
  param[j] = from_float<T>(to_float(param[j]) + s);
}

template <bool kLayer>
void norm_forward(const char* op, const void* x, const void* residual_in, const void* weight, const void* bias,
                  DType dtype, int64_t rows, int64_t d, double eps, void* residual_out, void* y, float* mean,
                  float* rstd, cudaStream_t stream) {
  if (rows == 0) return;
  with_floating(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const bool vector = d % kVec<T> == 0 && all_aligned16(x, residual_in, weight, bias, residual_out, y);
    const unsigned threads = warps_for(vector ? d / kVec<T> : d, kMaxRowThreads);
    launch(op, &norm_forward_kernel<T, kLayer>, static_cast<unsigned>(rows), threads, 0, stream,
           static_cast<const T*>(x), static_cast<const T*>(residual_in), static_cast<const T*>(weight),
           static_cast<const T*>(bias), d, static_cast<float>(eps), vector, static_cast<T*>(residual_out),
           static_cast<T*>(y), mean, rstd);
  });
}

template <bool kLayer>
void norm_backward(const char* op, const void* dy, const void* dresidual, const void* x, const void* weight,
                   const float* mean, const float* rstd, DType dtype, int64_t rows, int64_t d, void* dx,
                   void* dweight, void* dbias, float* scratch, cudaStream_t stream) {
  if (rows == 0) return;
  const int64_t blocks = backward_blocks(rows);
  float* partial_weight = scratch;
  float* partial_bias = dbias ? scratch + blocks * d : nullptr;
  with_floating(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const bool vector = d % kVec<T> == 0 && all_aligned16(dy, dresidual, x, weight, dx);
    const unsigned threads = warps_for(vector ? d / kVec<T> : d, kMaxRowThreads);
    launch(op, &norm_backward_kernel<T, kLayer>, static_cast<unsigned>(blocks), threads, 0, stream,
           static_cast<const T*>(dy), static_cast<const T*>(dresidual), static_cast<const T*>(x),
           static_cast<const T*>(weight), mean, rstd, rows, d, rows_per_block(rows), vector, static_cast<T*>(dx),
           partial_weight, partial_bias);
    const unsigned column_blocks = blocks_for(d, kColumnThreads);
    launch("norm_add_partials", &add_partials_kernel<T>, column_blocks, kColumnThreads, 0, stream,
           static_cast<const float*>(partial_weight), blocks, d, static_cast<T*>(dweight));
    if (dbias)
      launch("norm_add_partials", &add_partials_kernel<T>, column_blocks, kColumnThreads, 0, stream,
             static_cast<const float*>(partial_bias), blocks, d, static_cast<T*>(dbias));
  });
}

}  // namespace

void layernorm_forward(const void* x, const void* residual_in, const void* weight, const void* bias,
                       DType dtype, int64_t rows, int64_t d, double eps, void* residual_out, void* y,
                       float* mean, float* rstd, cudaStream_t stream) {
  norm_forward<true>("layernorm_forward", x, residual_in, weight, bias, dtype, rows, d, eps, residual_out, y,
                     mean, rstd, stream);
}

void rmsnorm_forward(const void* x, const void* residual_in, const void* weight, DType dtype, int64_t rows,
                     int64_t d, double eps, void* residual_out, void* y, float* rstd, cudaStream_t stream) {
  norm_forward<false>("rmsnorm_forward", x, residual_in, weight, nullptr, dtype, rows, d, eps, residual_out, y,
                      nullptr, rstd, stream);
}

int64_t norm_backward_scratch(int64_t rows, int64_t d, bool with_bias) {
  const int64_t n = backward_blocks(rows) * d * (with_bias ? 2 : 1);
  return n > 0 ? n : 1;  // never an empty allocation
}

void layernorm_backward(const void* dy, const void* dresidual, const void* x, const void* weight, const float* mean,
                        const float* rstd, DType dtype, int64_t rows, int64_t d, void* dx, void* dweight, void* dbias,
                        float* scratch, cudaStream_t stream) {
  norm_backward<true>(dresidual ? "add_layernorm_backward" : "layernorm_backward", dy, dresidual, x, weight, mean,
                      rstd, dtype, rows, d, dx, dweight, dbias, scratch, stream);
}

void rmsnorm_backward(const void* dy, const void* dresidual, const void* x, const void* weight, const float* rstd,
                      DType dtype, int64_t rows, int64_t d, void* dx, void* dweight, float* scratch,
                      cudaStream_t stream) {
  norm_backward<false>(dresidual ? "add_rmsnorm_backward" : "rmsnorm_backward", dy, dresidual, x, weight, nullptr,
                       rstd, dtype, rows, d, dx, dweight, nullptr, scratch, stream);
}

}  // namespace strata::cuda

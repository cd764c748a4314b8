// Optimizer-step kernels. AdamW repeats kernels/cpu/adamw.cpp's update operation for operation
// with single IEEE f32 operations (__fmul_rn and friends: never contracted into an FMA), so the
// device and the CPU give the same bits. The multi-tensor kernels run block b on chunk b of the
// chunk table (kChunk elements of one tensor); adamw_multi first reads the step's skip flag on the
// device and returns when it is set, so the host never has to look at it.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/optim.h"

namespace strata::cuda {
namespace {

constexpr unsigned kThreads = kStrideThreads;

__device__ __forceinline__ bool is_finite(double x) {
  return x - x == 0.0;
}  // false for NaN and +-inf

// kernels/cpu/adamw.cpp's update(): the same operations in the same order.
__device__ __forceinline__ void update(float& param, float grad, float& m, float& v,
                                       const AdamWConstants& k, float grad_scale, float decay) {
  const float g = __fmul_rn(grad, grad_scale);
  const float mi = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.one_minus_b1, g));
  const float vi = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(k.one_minus_b2, g), g));
  m = mi;
  v = vi;
  const float p = param;
  const float step =
      __fdiv_rn(__fmul_rn(k.step_size, mi), __fadd_rn(__fsqrt_rn(__fmul_rn(vi, k.inv_bc2)), k.eps));
  param = __fsub_rn(p, __fadd_rn(step, __fmul_rn(decay, p)));
}

template <typename G>
__global__ void adamw_kernel(float* param, const G* grad, float* m, float* v, int64_t n,
                             AdamWConstants k) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    float p = param[i], mi = m[i], vi = v[i];
    update(p, to_float(grad[i]), mi, vi, k, k.grad_scale, k.decay);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename G, typename C>
__global__ void adamw_multi_kernel(const AdamWEntry* entries, const ChunkEntry* chunks,
                                   AdamWConstants k, const float* grad_scale, const int32_t* skip) {
  if (*skip != 0) return;
  const ChunkEntry chunk = chunks[blockIdx.x];
  const AdamWEntry e = entries[chunk.tensor];
  const float scale = *grad_scale;
  const int64_t end = chunk.start + kChunk < e.n ? chunk.start + kChunk : e.n;
  const G* grad = static_cast<const G*>(e.grad);
  C* copy = static_cast<C*>(e.copy);
  for (int64_t i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
    float p = e.param[i], mi = e.m[i], vi = e.v[i];
    update(p, to_float(grad[i]), mi, vi, k, scale, e.decay);
    e.param[i] = p;
    e.m[i] = mi;
    e.v[i] = vi;
    if (copy) copy[i] = from_float<C>(p);
  }
}

template <typename T>
__global__ void chunk_sum_squares_kernel(const NormEntry* tensors, const ChunkEntry* chunks,
                                         double* partial) {
  __shared__ double scratch[32];
  const ChunkEntry chunk = chunks[blockIdx.x];
  const NormEntry e = tensors[chunk.tensor];
  const int64_t end = chunk.start + kChunk < e.n ? chunk.start + kChunk : e.n;
  const T* x = static_cast<const T*>(e.x);
  double s = 0;
  for (int64_t i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
    const double v = to_float(x[i]);
    s += v * v;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void finish_sum_squares_kernel(const double* partial, int64_t n, double* sum_squares,
                                          int32_t* nonfinite, bool accumulate) {
  __shared__ double scratch[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const int32_t bad = is_finite(s) ? 0 : 1;
    *sum_squares = accumulate ? *sum_squares + s : s;
    *nonfinite = accumulate ? (*nonfinite | bad) : bad;
  }
}

// One thread: src/train/trainer.cpp's formulas, in f64.
__global__ void clip_factor_kernel(const double* sums, int64_t n_sums, const int32_t* nonfinite,
                                   const double* loss, double max_norm, double loss_scale,
                                   float* grad_scale, int32_t* skip, double* norm_out) {
  double total = 0;
  for (int64_t i = 0; i < n_sums; ++i) total = __dadd_rn(total, sums[i]);
  const double norm = __ddiv_rn(__dsqrt_rn(total), loss_scale);
  const bool bad = *nonfinite != 0 || !is_finite(norm) || (loss && !is_finite(*loss));
  const double clip =
      max_norm > 0 && norm > max_norm ? __ddiv_rn(max_norm, __dadd_rn(norm, 1e-6)) : 1.0;
  *norm_out = norm;
  *skip = bad ? 1 : 0;
  *grad_scale = bad ? 0.0f : static_cast<float>(__ddiv_rn(clip, loss_scale));
}

}  // namespace

void adamw(float* param, const void* grad, DType grad_dtype, float* m, float* v, int64_t n,
           const AdamWConstants& k, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(grad_dtype, "adamw", [&](auto tag) {
    using G = decltype(tag);
    launch("adamw", &adamw_kernel<G>, stride_grid(n), kThreads, 0, stream, param,
           static_cast<const G*>(grad), m, v, n, k);
  });
}

void adamw_multi(const AdamWEntry* entries, const ChunkEntry* chunks, int64_t n_chunks,
                 DType grad_dtype, DType copy_dtype, const AdamWConstants& k,
                 const float* grad_scale, const int32_t* skip, cudaStream_t stream) {
  if (n_chunks == 0) return;
  with_floating(grad_dtype, "adamw_multi", [&](auto g_tag) {
    using G = decltype(g_tag);
    with_floating(copy_dtype, "adamw_multi", [&](auto c_tag) {
      using C = decltype(c_tag);
      launch("adamw_multi", &adamw_multi_kernel<G, C>, static_cast<unsigned>(n_chunks), kThreads, 0,
             stream, entries, chunks, k, grad_scale, skip);
    });
  });
}

void chunk_sum_squares(const NormEntry* tensors, const ChunkEntry* chunks, int64_t n_chunks,
                       DType dtype, double* partial, cudaStream_t stream) {
  if (n_chunks == 0) return;
  with_floating(dtype, "grad_norm_and_check", [&](auto tag) {
    using T = decltype(tag);
    launch("chunk_sum_squares", &chunk_sum_squares_kernel<T>, static_cast<unsigned>(n_chunks),
           kThreads, 0, stream, tensors, chunks, partial);
  });
}

void finish_sum_squares(const double* partial, int64_t n, double* sum_squares, int32_t* nonfinite,
                        bool accumulate, cudaStream_t stream) {
  launch("finish_sum_squares", &finish_sum_squares_kernel, 1, kThreads, 0, stream, partial, n,
         sum_squares, nonfinite, accumulate);
}

void clip_factor(const double* sum_squares, int64_t n_sums, const int32_t* nonfinite,
                 const double* loss, double max_norm, double loss_scale, float* grad_scale,
                 int32_t* skip, double* norm, cudaStream_t stream) {
  launch("clip_factor", &clip_factor_kernel, 1, 1, 0, stream, sum_squares, n_sums, nonfinite, loss,
         max_norm, loss_scale, grad_scale, skip, norm);
}

}  // namespace strata::cuda

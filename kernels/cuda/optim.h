// Optimizer-step kernels (kernels/cuda/optim.cu) for ops::adamw, ops::adamw_multi,
// ops::grad_norm_and_check and ops::clip_factor: raw device pointers and the stream. The
// multi-tensor launchers take device tables the front end (kernels/ops_optim.cpp) uploads: one
// entry per tensor and one per chunk of kChunk elements, so one launch covers every tensor of a
// dtype.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// The per-step AdamW constants, computed in f64 and rounded to f32 as kernels/cpu/adamw.cpp does.
struct AdamWConstants {
  float b1, b2, one_minus_b1, one_minus_b2;
  float step_size;  // lr / (1 - beta1^t)
  float inv_bc2;    // 1 / (1 - beta2^t)
  float decay;      // lr * weight_decay (adamw; the multi-tensor entries carry their own)
  float grad_scale, eps;
};

// One tensor: g = grad * k.grad_scale; the update of kernels/cpu/adamw.h, operation for operation
// in f32 (the same bits as the CPU).
void adamw(float* param, const void* grad, DType grad_dtype, float* m, float* v, int64_t n,
           const AdamWConstants& k, cudaStream_t stream);

// Elements a chunk of the multi-tensor tables covers (a multiple of every vector width).
inline constexpr int64_t kChunk = 8192;

struct AdamWEntry {
  float* param;
  const void* grad;
  float* m;
  float* v;
  void* copy;  // null: none; else `copy dtype` of the launch
  int64_t n;
  float decay;  // lr * weight_decay, or 0
  float pad_;
};
struct ChunkEntry {
  int64_t tensor;  // index into the entry table
  int64_t start;   // first element
};

// The entries named by `chunks` (device tables), all with grads of grad_dtype and copies of
// copy_dtype: g = grad * *grad_scale; nothing when *skip != 0.
void adamw_multi(const AdamWEntry* entries, const ChunkEntry* chunks, int64_t n_chunks,
                 DType grad_dtype, DType copy_dtype, const AdamWConstants& k,
                 const float* grad_scale, const int32_t* skip, cudaStream_t stream);

// partial[chunk] = sum of squares of the chunk's elements, in f64 (order fixed by the sizes).
// `tensors`: device table of element pointers and counts, all of `dtype`.
struct NormEntry {
  const void* x;
  int64_t n;
};
void chunk_sum_squares(const NormEntry* tensors, const ChunkEntry* chunks, int64_t n_chunks,
                       DType dtype, double* partial, cudaStream_t stream);
// total = sum of partial[0..n) in a fixed order; *sum_squares = total (+= with accumulate);
// *nonfinite = !isfinite(total) (|= with accumulate): squares of f32/bf16/f16 values cannot
// overflow f64, so the total is finite exactly when every element is.
void finish_sum_squares(const double* partial, int64_t n, double* sum_squares, int32_t* nonfinite,
                        bool accumulate, cudaStream_t stream);

// The trainer's step decision (ops::clip_factor); loss may be null.
void clip_factor(const double* sum_squares, int64_t n_sums, const int32_t* nonfinite,
                 const double* loss, double max_norm, double loss_scale, float* grad_scale,
                 int32_t* skip, double* norm, cudaStream_t stream);

}  // namespace strata::cuda

// Matrix products on the GPU through cuBLASLt (kernels/cuda/gemm.cpp), for ops::gemm and
// ops::gemm_ex: row-major operands as Strata stores them, f32 (full f32 arithmetic, no TF32), bf16
// and f16 (f32 accumulation), 2-D or strided batches, with the bias / GELU / bias-gradient
// epilogues. The front end (kernels/ops_gemm.cpp) checks the tensors first.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace strata {
class CudaDevice;
}

namespace strata::cuda {

// c[m, n] = alpha * op(a)[m, k] @ op(b)[k, n] + beta * c for each of `batch` contiguous products,
// a stored [m, k] ([k, m] when trans_a), b [k, n] ([n, k] when trans_b); then the epilogue that
// ops::GemmEpilogue documents (null pointers: not asked for). Queued on the device's stream.
struct GemmCall {
  bool trans_a = false, trans_b = false;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  DType dtype = DType::f32;
  double alpha = 1.0, beta = 0.0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  const void* bias = nullptr;  // [n]
  bool gelu = false;
  void* gelu_aux = nullptr;         // [batch, m, n]
  const void* dgelu_aux = nullptr;  // [batch, m, n]
  void* bias_grad = nullptr;        // [n] with dgelu_aux, else [m]
};
void gemm(CudaDevice& device, const GemmCall& call);

// The device's plan cache (matmul descriptor, layouts, chosen algorithm per shape, dtype,
// transposes, epilogue and pointer alignments): plans made so far and calls that found theirs.
struct GemmPlanStats {
  int64_t plans_created = 0;
  int64_t cache_hits = 0;
};
GemmPlanStats gemm_plan_stats(CudaDevice& device);

}  // namespace strata::cuda

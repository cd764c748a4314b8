// Return-code checks for the CUDA runtime, cuBLAS(Lt) and NCCL: each failure becomes an Error that
// names the call, the library's own error name and text, and the device.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if STRATA_HAVE_NCCL
#include <nccl.h>
#endif

#include "core/error.h"

namespace strata::detail {
std::string cuda_error_string(cudaError_t code);
std::string cublas_error_string(cublasStatus_t code);
#if STRATA_HAVE_NCCL
std::string nccl_error_string(ncclResult_t code);
#endif
}  // namespace strata::detail

#define STRATA_CUDA_CHECK(expr)                                                                 \
  do {                                                                                          \
    cudaError_t strata_cuda_rc_ = (expr);                                                       \
    if (strata_cuda_rc_ != cudaSuccess) [[unlikely]]                                            \
      ::strata::detail::throw_error(                                                            \
          __FILE__, __LINE__,                                                                   \
          ::strata::detail::concat(#expr, " failed: ",                                          \
                                   ::strata::detail::cuda_error_string(strata_cuda_rc_)));      \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once (asynchronous faults surface
// at the next synchronising call, which is checked too).
#define STRATA_CUDA_CHECK_LAUNCH(kernel_name) STRATA_CUDA_CHECK((static_cast<void>(kernel_name), cudaGetLastError()))

#define STRATA_CUBLAS_CHECK(expr)                                                               \
  do {                                                                                          \
    cublasStatus_t strata_cublas_rc_ = (expr);                                                  \
    if (strata_cublas_rc_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                \
      ::strata::detail::throw_error(                                                            \
          __FILE__, __LINE__,                                                                   \
          ::strata::detail::concat(#expr, " failed: ",                                          \
                                   ::strata::detail::cublas_error_string(strata_cublas_rc_)));  \
  } while (0)

#if STRATA_HAVE_NCCL
#define STRATA_NCCL_CHECK(expr)                                                                 \
  do {                                                                                          \
    ncclResult_t strata_nccl_rc_ = (expr);                                                      \
    if (strata_nccl_rc_ != ncclSuccess) [[unlikely]]                                            \
      ::strata::detail::throw_error(                                                            \
          __FILE__, __LINE__,                                                                   \
          ::strata::detail::concat(#expr, " failed: ",                                          \
                                   ::strata::detail::nccl_error_string(strata_nccl_rc_)));      \
  } while (0)
#endif

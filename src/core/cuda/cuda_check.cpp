#include "core/cuda/cuda_check.h"

namespace strata::detail {

std::string cuda_error_string(cudaError_t code) {
  int device = -1;
  cudaGetDevice(&device);
  return concat(cudaGetErrorName(code), " (", cudaGetErrorString(code), ") on cuda:", device);
}

std::string cublas_error_string(cublasStatus_t code) {
  return concat(cublasGetStatusName(code), " (", cublasGetStatusString(code), ")");
}

#if STRATA_HAVE_NCCL
std::string nccl_error_string(ncclResult_t code) {
  const char* last = ncclGetLastError(nullptr);
  return concat(ncclGetErrorString(code), last && *last ? std::string(": ") + last : std::string());
}

#endif

}  // namespace strata::detail

#include "kernels/cuda/launch.h"

#include "core/cuda/cuda_check.h"

namespace strata::cuda {

void check_launch(const char* kernel_name) {
  const cudaError_t rc = cudaGetLastError();
  STRATA_CHECK(rc == cudaSuccess, "kernel '", kernel_name, "' could not be launched: ",
               detail::cuda_error_string(rc));
}

}  // namespace strata::cuda

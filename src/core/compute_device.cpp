#include "core/compute_device.h"

#include "core/cuda/cuda_allocator.h"
#include "core/error.h"
#include "core/log.h"
#if STRATA_CUDA
#include "core/cuda/cuda_device.h"
#endif

namespace strata {

std::shared_ptr<Allocator> select_device(std::string_view setting, const std::string& want,
                                         const std::string& not_covered, int local_rank) {
  STRATA_CHECK(want == "cpu" || want == "cuda" || want == "auto", setting, ": '", want,
               "' is not a device (cpu, cuda or auto)");
  const int gpus = cuda_device_count();
  if (want == "cpu" || (want == "auto" && gpus == 0)) return nullptr;
  if (!not_covered.empty()) {
    STRATA_CHECK(want == "auto", setting, ": cuda does not yet cover ", not_covered, "; use cpu");
    log::warn(setting, " auto: a GPU is visible, but CUDA does not yet cover ", not_covered,
              "; running on the CPU");
    return nullptr;
  }
  STRATA_CHECK(gpus > 0, setting, ": cuda, but ",
               STRATA_CUDA ? "no GPU is visible to this process" : "this build has no CUDA backend");
#if STRATA_CUDA
  return std::make_shared<CudaDevice>(local_rank % gpus);
#else
  return nullptr;
#endif
}

}  // namespace strata

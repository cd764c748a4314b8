// A hardware description for estimator tests: round rates, the memory and node size asked for.
#pragma once

#include "tools/estimate.h"

namespace strata::testing {

inline Hardware test_hardware(double memory_bytes = 80e9, int64_t devices_per_node = 8) {
  Hardware h;
  h.name = "test";
  h.peak_flops_bf16 = h.peak_flops_fp32 = 1e12;
  h.memory_bytes = memory_bytes;
  h.memory_bandwidth = h.intra_node_bandwidth = h.inter_node_bandwidth = 1e11;
  h.devices_per_node = devices_per_node;
  return h;
}

}  // namespace strata::testing

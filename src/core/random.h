// Filling tensors from the Philox streams. `first_index` is the global index of the tensor's first
// element, so a rank holding a slice draws exactly the values the whole tensor would hold there.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace strata {

// x[i] = mean + stddev * normal(seed, stream, first_index + i); CPU, any floating dtype, contiguous.
void fill_normal(Tensor& x, uint64_t seed, uint64_t stream, double mean, double stddev,
                 uint64_t first_index = 0);
// x[i] = low + (high - low) * uniform(seed, stream, first_index + i).
void fill_uniform(Tensor& x, uint64_t seed, uint64_t stream, double low, double high,
                  uint64_t first_index = 0);
// x[i] = value.
void fill(Tensor& x, double value);

}  // namespace strata

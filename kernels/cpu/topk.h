// The k largest entries of each row on the CPU (the mixture-of-experts router's selection).
#pragma once

#include <cstdint>

namespace strata::cpu {

// x: [rows, n]; values: [rows, k]; indices: [rows, k]. Largest first; equal values in ascending
// column order; NaN counts as larger than every number (so a NaN router score is never hidden).
// T = float, double, bf16 or f16.
template <typename T>
void topk(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int32_t* indices);

}  // namespace strata::cpu

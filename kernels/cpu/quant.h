// Weight-only int8 on the CPU: per-row symmetric quantisation and its inverse (the reference the
// CUDA kernels in kernels/cuda/quant.h are tested against).
#pragma once

#include <cstdint>

namespace strata::cpu {

// w: [rows, cols] f32 -> q: rows of row_bytes bytes (cols codes, then zeros), scale: [rows] f32:
//   scale[r] = max_c |w[r, c]| / 127   (1 when the row is all zeros)
//   q[r, c]  = clamp(round_half_away(w[r, c] / scale[r]), -127, 127)
void quantize_int8(const float* w, int64_t rows, int64_t cols, int8_t* q, int64_t row_bytes,
                   float* scale);

// w[r, c] = T(float(q[r, c]) * scale[r]): the product in f32, rounded once to T (nearest even).
// T = float, double, bf16 or f16.
template <typename T>
void dequantize_int8(const int8_t* q, int64_t row_bytes, const float* scale, int64_t rows,
                     int64_t cols, T* w);

}  // namespace strata::cpu

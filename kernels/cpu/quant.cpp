#include "kernels/cpu/quant.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/element.h"

namespace strata::cpu {

void quantize_int8(const float* w, int64_t rows, int64_t cols, int8_t* q, int64_t row_bytes,
                   float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = w + r * cols;
    int8_t* dst = q + r * row_bytes;
    float top = 0;
    for (int64_t c = 0; c < cols; ++c) top = std::max(top, std::abs(src[c]));
    const float s = top > 0 ? top / 127.0f : 1.0f;
    scale[r] = s;
    for (int64_t c = 0; c < cols; ++c)
      dst[c] = static_cast<int8_t>(std::clamp(std::lround(src[c] / s), -127L, 127L));
    std::fill(dst + cols, dst + row_bytes, int8_t{0});
  }
}

template <typename T>
void dequantize_int8(const int8_t* q, int64_t row_bytes, const float* scale, int64_t rows,
                     int64_t cols, T* w) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[r * cols + c] = store<T>(static_cast<float>(q[r * row_bytes + c]) * scale[r]);
}

template void dequantize_int8<float>(const int8_t*, int64_t, const float*, int64_t, int64_t,
                                     float*);
template void dequantize_int8<double>(const int8_t*, int64_t, const float*, int64_t, int64_t,
                                      double*);
template void dequantize_int8<bf16>(const int8_t*, int64_t, const float*, int64_t, int64_t, bf16*);
template void dequantize_int8<f16>(const int8_t*, int64_t, const float*, int64_t, int64_t, f16*);

}  // namespace strata::cpu

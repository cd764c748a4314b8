// exp for the f32 kernels, written so that a loop over it vectorizes: no call into libm (which
// GCC keeps scalar) and no branch (special cases are blended in with bit masks). The hot f32 loops
// (the softmax of cross-entropy and attention, GELU) call it through exp_c; f64 keeps libm, as the
// reference the gradient checks use.
//
// exp_f32(x): Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2 (ln2 split in two parts so k ln2 is
// exact for |k| <= 2^8), then Cephes' minimax polynomial for e^r (S. Moshier, Cephes expf.c), and
// 2^k put into the exponent bits. Measured against exp in f64 over every f32 in [-87.3, 88.7]: at
// most 0.99 ulp of the f32 result (1.02 ulp where the compiler fuses multiply-adds, as GCC does
// by default in C++ when the target has FMA, e.g. -march=native; the x86-64 baseline has none).
// Below -87.33 (where e^x leaves the normal range) it returns 0, above 88.72 +inf, NaN for NaN.
// Each element is computed alone, in a fixed sequence of operations, so the result does not
// depend on the vector width or the thread count.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace strata::cpu {

inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // ln2 to 15 bits: k * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kLo = -87.33654f, kHi = 88.72283f;  // e^kLo = 2^-126, e^kHi ~ FLT_MAX
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound holds round(x) in its low bits
  const float shifted = x * kLog2e + kRound;
  const float k = shifted - kRound;  // nearest integer to x / ln2
  // k as an integer from the bits (no float-to-int conversion, which is undefined out of range).
  const auto ki = static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) -
                                       std::bit_cast<uint32_t>(kRound));
  const float r = (x - k * kLn2Hi) - k * kLn2Lo;
  // Cephes' minimax polynomial: e^r = 1 + r + r^2 p(r) on |r| <= ln2/2.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^k into the exponent bits, k in [-126, 128]; 2^128 is not a float, so 2^k = 2^k1 2^(k - k1).
  const int32_t k1 = ki > 127 ? 127 : ki;
  const float y = p * std::bit_cast<float>((k1 + 127) << 23) *
                  std::bit_cast<float>((ki - k1 + 127) << 23);
  // The special cases from x's bits, blended in with masks: compares on floats and selects would
  // let the compiler branch around the arithmetic above, and a loop with branches does not
  // vectorize. Above kHi (+inf included) -> +inf; below kLo (-inf included) -> 0; NaN -> x.
  const auto bits = std::bit_cast<int32_t>(x);
  const int32_t big = -static_cast<int32_t>(bits > std::bit_cast<int32_t>(kHi));
  const int32_t small =
      -static_cast<int32_t>(std::bit_cast<uint32_t>(x) > std::bit_cast<uint32_t>(kLo));
  const int32_t nan = -static_cast<int32_t>((bits & 0x7fffffff) > 0x7f800000);
  int32_t out = std::bit_cast<int32_t>(y);
  out = (out & ~big) | (0x7f800000 & big);
  out &= ~small;
  out = (out & ~nan) | (bits & nan);
  return std::bit_cast<float>(out);
}

// e^x in the compute type C of a kernel: exp_f32 for f32 (and the 16-bit formats computed in f32),
// libm for f64.
template <typename C>
inline C exp_c(C x) {
  if constexpr (std::is_same_v<C, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

}  // namespace strata::cpu

// IEEE half precision for the simulated GPU: the storage type and the conversion functions kernels
// use (explicit, as in cuda_bf16.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "gpusim/vector_types.h"

struct __half {
  unsigned short __x;
  __half() = default;
};

struct __half2 {
  __half x, y;
};

inline float __half2float(__half h) {
  const uint32_t sign = uint32_t{h.__x & 0x8000u} << 16;
  uint32_t exponent = (h.__x >> 10) & 0x1fu, mantissa = h.__x & 0x3ffu, u;
  if (exponent == 0x1f) {
    u = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      u = sign;
    } else {
      exponent = 127 - 15 + 1;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --exponent;
      }
      u = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else {
    u = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, overflow to infinity, subnormals kept.
inline __half __float2half_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  __half h;
  if (abs > 0x7f800000u) {
    h.__x = static_cast<unsigned short>(sign | 0x7e00u);
    return h;
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: infinity
    h.__x = static_cast<unsigned short>(sign | 0x7c00u);
    return h;
  }
  if (abs < 0x38800000u) {  // below the smallest normal half: a subnormal (or zero)
    float af;
    std::memcpy(&af, &abs, 4);
    // The subnormal step is 2^-24: scale, round to nearest even by adding the float magic number.
    const float scaled = af * 16777216.0f;  // exact
    float r = scaled + 8388608.0f;          // rounds to an integer (nearest even)
    uint32_t ru;
    std::memcpy(&ru, &r, 4);
    h.__x = static_cast<unsigned short>(sign | (ru - 0x4b000000u));
    return h;
  }
  const uint32_t mantissa_odd = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0xfffu + mantissa_odd;
  h.__x = static_cast<unsigned short>(sign | ((rounded - 0x38000000u) >> 13));
  return h;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline float2 __half22float2(__half2 v) { return float2{__half2float(v.x), __half2float(v.y)}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) {
  __half h;
  h.__x = u;
  return h;
}

// bf16 and f16 as 16-bit storage types, converted to and from f32 with round-to-nearest-even.
// Usable on the host and in CUDA device code; on the CPU they are storage formats only and every
// computation on them happens in f32.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define STRATA_HD __host__ __device__ __forceinline__
#else
#define STRATA_HD inline
#endif

namespace strata {

namespace detail {
STRATA_HD uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}
STRATA_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}
}  // namespace detail

struct bf16 {
  uint16_t bits = 0;
  // bf16 is the top half of an f32. Round to nearest, ties to even: add 0x7fff plus the lowest kept
  // bit, then truncate. NaN stays NaN (quiet bit forced so the truncation cannot make it Inf).
  STRATA_HD static bf16 from_float(float x) {
    uint32_t u = detail::f32_bits(x);
    bf16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      h.bits = static_cast<uint16_t>((u >> 16) | 0x40u);
      return h;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    h.bits = static_cast<uint16_t>(u >> 16);
    return h;
  }
  STRATA_HD float to_float() const { return detail::bits_f32(static_cast<uint32_t>(bits) << 16); }
};

struct f16 {
  uint16_t bits = 0;
  // IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Round to nearest even,
  // overflow to Inf, gradual underflow to subnormals.
  STRATA_HD static f16 from_float(float x) {
    uint32_t u = detail::f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t abs = u & 0x7fffffffu;
    f16 h;
    if (abs > 0x7f800000u) {  // NaN
      h.bits = static_cast<uint16_t>(sign | 0x7e00u);
    } else if (abs >= 0x477ff000u) {  // rounds to >= 65520: Inf
      h.bits = static_cast<uint16_t>(sign | 0x7c00u);
    } else if (abs < 0x38800000u) {  // below 2^-14: subnormal or zero
      // value = abs_float * 2^24 rounded to an integer count of 2^-24 units.
      if (abs < 0x33000000u) {  // below 2^-25: rounds to zero
        h.bits = static_cast<uint16_t>(sign);
      } else {
        uint32_t exp = abs >> 23;
        uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp;  // 113 - exp + 13
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) ++q;
        h.bits = static_cast<uint16_t>(sign | q);
      }
    } else {
      uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
      r += 0xfffu + ((r >> 13) & 1u);
      h.bits = static_cast<uint16_t>(sign | (r >> 13));
    }
    return h;
  }
  STRATA_HD float to_float() const {
    uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    uint32_t exp = (bits >> 10) & 0x1fu;
    uint32_t mant = bits & 0x3ffu;
    uint32_t u;
    if (exp == 0x1fu) {
      u = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
      u = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400u) == 0);
      u = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mant & 0x3ffu) << 13);
    }
    return detail::bits_f32(u);
  }
};

}  // namespace strata

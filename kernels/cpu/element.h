// Element access shared by the CPU kernels: bf16 and f16 are storage formats, widened to f32 on
// load and rounded to nearest even (core/half.h) on store; f32 and f64 compute in themselves.
// Kernels that accumulate in f64 use widen()/narrow(), which round once from f64 to any format.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/half.h"

namespace strata::cpu {

// The type a kernel computes in for elements stored as T; also the type of the statistics saved
// for T's backward (ops::stats_dtype: f32 for f32/bf16/f16, f64 for f64).
template <typename T>
struct compute_type {
  using type = T;
};
template <>
struct compute_type<bf16> {
  using type = float;
};
template <>
struct compute_type<f16> {
  using type = float;
};
template <typename T>
using compute_t = typename compute_type<T>::type;

template <typename T>
inline compute_t<T> load(T x) {
  if constexpr (sizeof(T) == 2)
    return x.to_float();
  else
    return x;
}

template <typename T>
inline T store(compute_t<T> x) {
  if constexpr (sizeof(T) == 2)
    return T::from_float(x);
  else
    return x;
}

// x rounded to f32 "to odd": truncate toward zero and set the last bit when inexact. A value
// rounded to odd at 24 bits and then to nearest even at 8 (bf16) or 11 (f16) bits is rounded
// correctly, which plain f64 -> f32 -> 16-bit double rounding is not (Boldo & Melquiond 2008).
inline float to_f32_odd(double x) {
  float f = static_cast<float>(x);
  if (std::isnan(x) || static_cast<double>(f) == x) return f;
  if (std::abs(static_cast<double>(f)) > std::abs(x)) f = std::nextafter(f, 0.0f);  // truncate
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= 1u;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
inline double widen(T x) {
  return static_cast<double>(load(x));
}

// x rounded to nearest even in T, once.
template <typename T>
inline T narrow(double x) {
  if constexpr (sizeof(T) == 2)
    return T::from_float(to_f32_odd(x));
  else
    return static_cast<T>(x);
}

// Below this many elements an OpenMP loop costs more to start (a few microseconds to wake the
// team) than it saves; the kernels' parallel loops carry `if (work >= kParallelMin)`.
inline constexpr int64_t kParallelMin = int64_t{1} << 15;

// Elements per chunk of the deterministic reductions: partial sums are taken over fixed chunks and
// then added in chunk order, so a result does not depend on the number of threads.
inline constexpr int64_t kReduceChunk = 4096;

// Instantiates MACRO(T) for every storage type the CPU kernels take.
#define STRATA_FOR_EACH_FLOATING(MACRO) \
  MACRO(float)                          \
  MACRO(double)                         \
  MACRO(bf16)                           \
  MACRO(f16)

}  // namespace strata::cpu

// Element access shared by the CPU kernels: bf16 and f16 are storage formats, widened to f32 on
// load and rounded (to nearest even, core/half.h) on store; f32 and f64 compute in themselves.
#pragma once

#include <cstdint>

#include "core/half.h"

namespace strata::cpu {

// The type a kernel computes in for elements stored as T.
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

// Below this many elements an OpenMP loop costs more to start (a few microseconds to wake the
// team) than it saves; the kernels' parallel loops carry `if (work >= kParallelMin)`.
inline constexpr int64_t kParallelMin = int64_t{1} << 15;

// Elements per chunk of the deterministic reductions: partial sums are taken over fixed chunks and
// then added in chunk order, so a result does not depend on the number of threads.
inline constexpr int64_t kReduceChunk = 4096;

}  // namespace strata::cpu

#include "kernels/cpu/activations.h"

#include <cmath>
#include <type_traits>

#include "kernels/cpu/element.h"
#include "kernels/cpu/vector_math.h"

namespace strata::cpu {
namespace {

template <typename C>
constexpr C kSqrt2OverPi = static_cast<C>(0.79788456080286535588);  // sqrt(2 / pi)
template <typename C>
constexpr C kGeluCubic = static_cast<C>(0.044715);

template <typename C>
C sigmoid(C g) {
  return C(1) / (C(1) + exp_c(-g));  // exp overflows to inf for very negative g: s = 0
}

// With u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u): since 1 + tanh(u) = 2 sigmoid(2u),
//   gelu(x) = 0.5 x (1 + t) = x s,  s = sigmoid(2u) = 1 / (1 + e^(-2u)),
//   gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) u' = s + 2 x s (1 - s) u',
//   u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
// In f32 the sigmoid form runs on exp_f32 (kernels/cpu/vector_math.h), so the loops vectorize; f64
// keeps libm's tanh as the reference.
template <typename C>
C gelu_sigmoid(C v) {
  const C u = kSqrt2OverPi<C> * (v + kGeluCubic<C> * v * v * v);
  return C(1) / (C(1) + exp_c(C(-2) * u));  // e^(-2u) = inf for very negative u: s = 0
}

}  // namespace

template <typename T>
void gelu_forward(const T* x, int64_t n, T* y) {
  using C = compute_t<T>;
  if constexpr (std::is_same_v<C, float>) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const C v = load(x[i]);
      y[i] = store<T>(v * gelu_sigmoid(v));
    }
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const C v = load(x[i]);
      const C u = kSqrt2OverPi<C> * (v + kGeluCubic<C> * v * v * v);
      y[i] = store<T>(C(0.5) * v * (C(1) + std::tanh(u)));
    }
  }
}

template <typename T>
void gelu_backward(const T* dy, const T* x, int64_t n, T* dx) {
  using C = compute_t<T>;
  if constexpr (std::is_same_v<C, float>) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const C v = load(x[i]);
      const C s = gelu_sigmoid(v);
      const C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluCubic<C> * v * v);
      dx[i] = store<T>(load(dy[i]) * (s + C(2) * v * s * (C(1) - s) * du));
    }
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const C v = load(x[i]);
      const C t = std::tanh(kSqrt2OverPi<C> * (v + kGeluCubic<C> * v * v * v));
      const C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluCubic<C> * v * v);
      const C grad = C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * du;
      dx[i] = store<T>(load(dy[i]) * grad);
    }
  }
}

template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* y) {
  using C = compute_t<T>;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const C g = load(gate[i]);
    y[i] = store<T>(g * sigmoid(g) * load(up[i]));
  }
}

template <typename T>
void swiglu_backward(const T* dy, const T* gate, const T* up, int64_t n, T* dgate, T* dup) {
  using C = compute_t<T>;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const C g = load(gate[i]), u = load(up[i]), d = load(dy[i]);
    const C s = sigmoid(g);
    dgate[i] = store<T>(d * u * s * (C(1) + g * (C(1) - s)));
    dup[i] = store<T>(d * g * s);
  }
}

#define STRATA_INSTANTIATE_ACTIVATIONS(T)                           \
  template void gelu_forward<T>(const T*, int64_t, T*);             \
  template void gelu_backward<T>(const T*, const T*, int64_t, T*);  \
  template void swiglu_forward<T>(const T*, const T*, int64_t, T*); \
  template void swiglu_backward<T>(const T*, const T*, const T*, int64_t, T*, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_ACTIVATIONS)
#undef STRATA_INSTANTIATE_ACTIVATIONS

}  // namespace strata::cpu

#include "kernels/cpu/adamw.h"

#include <cmath>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/cpu/element.h"

namespace strata::cpu {

namespace {

// The per-step constants, computed once in f64 and rounded to the master precision P.
template <typename P>
struct Constants {
  P b1, b2, one_minus_b1, one_minus_b2;
  P step_size;  // lr / bc1
  P inv_bc2;    // 1 / bc2
  P decay;      // lr * weight_decay
  P grad_scale, eps;
  explicit Constants(const AdamWCoefficients& c)
      : b1(static_cast<P>(c.beta1)),
        b2(static_cast<P>(c.beta2)),
        one_minus_b1(static_cast<P>(1.0 - c.beta1)),
        one_minus_b2(static_cast<P>(1.0 - c.beta2)),
        step_size(static_cast<P>(c.lr / c.bias_correction1)),
        inv_bc2(static_cast<P>(1.0 / c.bias_correction2)),
        decay(static_cast<P>(c.lr * c.weight_decay)),
        grad_scale(static_cast<P>(c.grad_scale)),
        eps(static_cast<P>(c.eps)) {}
};

// One element: the reference every path below computes, operation for operation.
template <typename P, typename G>
inline void update(P& param, G grad, P& m, P& v, const Constants<P>& k) {
  const P g = static_cast<P>(load(grad)) * k.grad_scale;
  const P mi = k.b1 * m + k.one_minus_b1 * g;
  const P vi = k.b2 * v + k.one_minus_b2 * g * g;
  m = mi;
  v = vi;
  // Decoupled decay uses the parameter from before this step's update.
  param -= k.step_size * mi / (std::sqrt(vi * k.inv_bc2) + k.eps) + k.decay * param;
}

#if defined(__SSE2__)
// update() on four f32 elements at once, with the same operations in the same order: SSE's
// mulps/addps/divps/sqrtps round each lane exactly as the scalar instructions do, so the results
// are bit for bit those of the scalar loop. GCC does not vectorize that loop itself: std::sqrt may
// set errno (-fmath-errno, the default), so each square root stays a scalar instruction, and the
// scalar sqrt and divide, not memory, then bound AdamW (GPT-2 124M on 2 cores: ~150 ms per step
// scalar, ~80 ms here, which is the time of its 28 bytes of traffic per parameter).
inline void update4(float* param, const float* grad, float* m, float* v,
                    const Constants<float>& k) {
  const __m128 g = _mm_mul_ps(_mm_loadu_ps(grad), _mm_set1_ps(k.grad_scale));
  const __m128 mi = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(k.b1), _mm_loadu_ps(m)),
                               _mm_mul_ps(_mm_set1_ps(k.one_minus_b1), g));
  const __m128 vi = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(k.b2), _mm_loadu_ps(v)),
                               _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(k.one_minus_b2), g), g));
  _mm_storeu_ps(m, mi);
  _mm_storeu_ps(v, vi);
  const __m128 p = _mm_loadu_ps(param);
  const __m128 root = _mm_sqrt_ps(_mm_mul_ps(vi, _mm_set1_ps(k.inv_bc2)));
  const __m128 step = _mm_div_ps(_mm_mul_ps(_mm_set1_ps(k.step_size), mi),
                                 _mm_add_ps(root, _mm_set1_ps(k.eps)));
  _mm_storeu_ps(param, _mm_sub_ps(p, _mm_add_ps(step, _mm_mul_ps(_mm_set1_ps(k.decay), p))));
}
#endif

}  // namespace

template <typename P, typename G>
void adamw(P* param, const G* grad, P* m, P* v, int64_t n, const AdamWCoefficients& c) {
  const Constants<P> k(c);
  int64_t done = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<P, float> && std::is_same_v<G, float>) {
    const int64_t quads = n / 4;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t q = 0; q < quads; ++q)
      update4(param + 4 * q, grad + 4 * q, m + 4 * q, v + 4 * q, k);
    done = 4 * quads;
  }
#endif
#pragma omp parallel for schedule(static) if (n - done >= kParallelMin)
  for (int64_t i = done; i < n; ++i) update(param[i], grad[i], m[i], v[i], k);
}

template void adamw<float, float>(float*, const float*, float*, float*, int64_t,
                                  const AdamWCoefficients&);
template void adamw<float, bf16>(float*, const bf16*, float*, float*, int64_t,
                                 const AdamWCoefficients&);
template void adamw<float, f16>(float*, const f16*, float*, float*, int64_t,
                                const AdamWCoefficients&);
template void adamw<double, double>(double*, const double*, double*, double*, int64_t,
                                    const AdamWCoefficients&);
template void adamw<double, bf16>(double*, const bf16*, double*, double*, int64_t,
                                  const AdamWCoefficients&);
template void adamw<double, f16>(double*, const f16*, double*, double*, int64_t,
                                 const AdamWCoefficients&);

}  // namespace strata::cpu

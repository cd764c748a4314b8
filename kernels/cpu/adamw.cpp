#include "kernels/cpu/adamw.h"

#include <cmath>

#include "kernels/cpu/element.h"

namespace strata::cpu {

template <typename P, typename G>
void adamw(P* param, const G* grad, P* m, P* v, int64_t n, const AdamWCoefficients& c) {
  // The per-step constants once, in f64, then in the master precision P.
  const P b1 = static_cast<P>(c.beta1), b2 = static_cast<P>(c.beta2);
  const P one_minus_b1 = static_cast<P>(1.0 - c.beta1),
          one_minus_b2 = static_cast<P>(1.0 - c.beta2);
  const P step_size = static_cast<P>(c.lr / c.bias_correction1);  // lr / bc1
  const P inv_bc2 = static_cast<P>(1.0 / c.bias_correction2);
  const P decay = static_cast<P>(c.lr * c.weight_decay);
  const P grad_scale = static_cast<P>(c.grad_scale), eps = static_cast<P>(c.eps);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const P g = static_cast<P>(load(grad[i])) * grad_scale;
    const P mi = b1 * m[i] + one_minus_b1 * g;
    const P vi = b2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    // Decoupled decay uses the parameter from before this step's update.
    param[i] -= step_size * mi / (std::sqrt(vi * inv_bc2) + eps) + decay * param[i];
  }
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

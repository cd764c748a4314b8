// AdamW's front end: param, m, v share a master dtype (f32 or f64) and a shape; grad has that shape
// and the master dtype or bf16/f16 (a low-precision gradient applied to master weights).
#include <cmath>
#include <type_traits>

#include "kernels/cpu/adamw.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWArgs& args) {
  constexpr const char* op = "adamw";
  check::usable(op, "param", param);
  check::usable(op, "grad", grad);
  check::same_device(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  dispatch::cpu_only(op, "param", param);
  dispatch::like(op, "m", m, "param", param);
  dispatch::like(op, "v", v, "param", param);
  STRATA_CHECK(grad.shape() == param.shape(), op, ": argument 'grad' ", grad.describe(),
               " must have the shape of 'param' ", param.describe());
  STRATA_CHECK(args.step >= 1, op, ": step is 1-based (it sets the bias correction), got ",
               args.step);
  STRATA_CHECK(args.beta1 >= 0 && args.beta1 < 1 && args.beta2 >= 0 && args.beta2 < 1, op,
               ": betas must lie in [0, 1), got beta1=", args.beta1, " beta2=", args.beta2);
  const double t = static_cast<double>(args.step);
  const cpu::AdamWCoefficients c{args.lr,
                                 args.beta1,
                                 args.beta2,
                                 args.eps,
                                 args.weight_decay,
                                 1.0 - std::pow(args.beta1, t),
                                 1.0 - std::pow(args.beta2, t),
                                 args.grad_scale};
  dispatch::real(op, "param", param, [&](auto p_tag) {
    using P = decltype(p_tag);
    dispatch::dtype_in(op, "grad", grad, {param.dtype(), DType::bf16, DType::f16});
    dispatch::floating(op, "grad", grad, [&](auto g_tag) {
      using G = decltype(g_tag);
      // grad is the master dtype or a 16-bit one (checked above); other pairs are never reached.
      if constexpr (std::is_same_v<G, P> || sizeof(G) == 2)
        cpu::adamw<P, G>(param.data<P>(), grad.data<G>(), m.data<P>(), v.data<P>(), param.numel(),
                         c);
    });
  });
}

}  // namespace strata::ops

// gemm's front end: checks the operands of c = alpha * op(a) @ op(b) + beta * c and runs the CPU
// product (kernels/cpu/gemm): f32/f64 through BLAS, bf16/f16 widened to f32.
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {

void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmArgs& args) {
  constexpr const char* op = "gemm";
  check::usable(op, "a", a);
  check::usable(op, "b", b);
  check::usable(op, "c", c);
  check::same_device(op, {{"a", &a}, {"b", &b}, {"c", &c}});
  dispatch::cpu_only(op, "a", a);
  STRATA_CHECK((a.ndim() == 2 || a.ndim() == 3) && b.ndim() == a.ndim() && c.ndim() == a.ndim(), op,
               ": a, b and c must all be 2-D, or all 3-D with a batch dimension; got a ",
               a.describe(), ", b ", b.describe(), ", c ", c.describe());
  dispatch::dtype_like(op, "b", b, "a", a);
  dispatch::dtype_like(op, "c", c, "a", a);

  // Sizes of op(a) [m, k] and op(b) [k, n], read from the last two dims as stored.
  const int r = a.ndim() - 2;  // index of the row dim
  const int64_t batch = r == 1 ? a.size(0) : 1;
  const int64_t m = args.trans_a ? a.size(r + 1) : a.size(r);
  const int64_t k = args.trans_a ? a.size(r) : a.size(r + 1);
  const int64_t kb = args.trans_b ? b.size(r + 1) : b.size(r);
  const int64_t n = args.trans_b ? b.size(r) : b.size(r + 1);
  STRATA_CHECK(kb == k && (r == 0 || b.size(0) == batch), op, ": inner or batch sizes differ: a ",
               a.describe(), (args.trans_a ? " (transposed)" : ""), " gives op(a) [", m, ", ", k,
               "], b ", b.describe(), (args.trans_b ? " (transposed)" : ""), " gives op(b) [", kb,
               ", ", n, "]");
  Shape expected = r == 1 ? Shape{batch, m, n} : Shape{m, n};
  STRATA_CHECK(c.shape() == expected, op, ": argument 'c' has shape ", shape_string(c.shape()),
               ", expected ", shape_string(expected), " for a ", a.describe(), " and b ",
               b.describe());

  dispatch::floating(op, "a", a, [&](auto tag) {
    using T = decltype(tag);
    using C = cpu::compute_t<T>;
    cpu::gemm<T>(args.trans_a, args.trans_b, batch, m, n, k, static_cast<C>(args.alpha),
                 a.data<T>(), b.data<T>(), static_cast<C>(args.beta), c.data<T>());
  });
}

}  // namespace strata::ops

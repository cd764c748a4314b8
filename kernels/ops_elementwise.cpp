// Front ends of the elementwise ops and reductions: cast, add, scale, axpy, sum, sum_squares,
// l2_norm. All take f32, f64, bf16 and f16 (the 16-bit ones computed in f32) on the CPU.
#include <cmath>

#include "kernels/cpu/elementwise.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {
namespace {

// sum_i x_i, or sum_i x_i^2, in f64; `op` names the caller in errors.
double reduce(const char* op, const Tensor& x, bool squares) {
  double result = 0;
  dispatch::elementwise(op, {{"x", &x}}, [&](auto tag) {
    using T = decltype(tag);
    result =
        squares ? cpu::sum_squares<T>(x.data<T>(), x.numel()) : cpu::sum<T>(x.data<T>(), x.numel());
  });
  return result;
}

}  // namespace

void cast(const Tensor& src, Tensor& dst) {
  constexpr const char* op = "cast";
  check::usable(op, "src", src);
  check::usable(op, "dst", dst);
  check::same_device(op, {{"src", &src}, {"dst", &dst}});
  dispatch::cpu_only(op, "src", src);
  STRATA_CHECK(src.shape() == dst.shape(), op, ": argument 'dst' ", dst.describe(),
               " must have the shape of 'src' ", src.describe());
  dispatch::floating(op, "src", src, [&](auto s_tag) {
    using S = decltype(s_tag);
    dispatch::floating(op, "dst", dst, [&](auto d_tag) {
      using D = decltype(d_tag);
      cpu::cast<S, D>(src.data<S>(), src.numel(), dst.data<D>());
    });
  });
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch::elementwise("add", {{"a", &a}, {"b", &b}, {"out", &out}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::add<T>(a.data<T>(), b.data<T>(), a.numel(), out.data<T>());
  });
}

void scale(Tensor& x, double alpha) {
  dispatch::elementwise("scale", {{"x", &x}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::scale<T>(x.data<T>(), x.numel(), alpha);
  });
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  if (y.dtype() == DType::f32 && (x.dtype() == DType::bf16 || x.dtype() == DType::f16)) {
    // The one mixed case: 16-bit values accumulated into f32 (mixed-precision gradients).
    check::usable("axpy", "x", x);
    check::usable("axpy", "y", y);
    dispatch::cpu_only("axpy", "x", x);
    dispatch::cpu_only("axpy", "y", y);
    STRATA_CHECK(x.shape() == y.shape(), "axpy: argument 'x' ", x.describe(),
                 " must have the shape of 'y' ", y.describe());
    if (x.dtype() == DType::bf16)
      cpu::axpy_widen<bf16>(alpha, x.data<bf16>(), x.numel(), y.data<float>());
    else
      cpu::axpy_widen<f16>(alpha, x.data<f16>(), x.numel(), y.data<float>());
    return;
  }
  dispatch::elementwise("axpy", {{"x", &x}, {"y", &y}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::axpy<T>(alpha, x.data<T>(), x.numel(), y.data<T>());
  });
}

double sum(const Tensor& x) {
  return reduce("sum", x, /*squares=*/false);
}
double sum_squares(const Tensor& x) {
  return reduce("sum_squares", x, /*squares=*/true);
}
double l2_norm(const Tensor& x) {
  return std::sqrt(reduce("l2_norm", x, /*squares=*/true));
}

}  // namespace strata::ops

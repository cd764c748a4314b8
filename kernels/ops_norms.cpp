// LayerNorm and RMSNorm front ends: x is [rows..., d]; weight and bias [d]; the per-row statistics
// [rows...] (or flattened [rows]) in ops::stats_dtype. f32, f64, bf16 and f16 on the CPU.
#include "kernels/cpu/norms.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {
namespace {

struct Rows {
  int64_t rows;
  int64_t d;
  Shape leading;  // x's shape without its last dim
};

// x's dtype gates the call first (f32, f64, or bf16/f16 computed in f64 sums), then its rows.
Rows rows_of(std::string_view op, const Tensor& x) {
  dispatch::dtype_in(op, "x", x, {DType::f32, DType::f64, DType::bf16, DType::f16});
  STRATA_CHECK(x.ndim() >= 1 && x.size(-1) > 0, op, ": argument 'x' ", x.describe(),
               " needs a non-empty last dimension to normalise over");
  Rows r{x.numel() / x.size(-1), x.size(-1), Shape(x.shape().begin(), x.shape().end() - 1)};
  return r;
}

// A per-row statistic: x's leading shape, or those dims flattened, in x's stats dtype.
void check_stat(std::string_view op, std::string_view arg, const Tensor& t, const Tensor& x,
                const Rows& r) {
  check::usable(op, arg, t);
  STRATA_CHECK(t.shape() == r.leading || t.shape() == Shape{r.rows}, op, ": argument '", arg,
               "' has shape ", shape_string(t.shape()), ", expected ", shape_string(r.leading),
               r.leading.size() == 1 ? "" : " or ",
               r.leading.size() == 1 ? "" : shape_string({r.rows}), " for x ", x.describe());
  STRATA_CHECK(t.dtype() == stats_dtype(x.dtype()), op, ": argument '", arg, "' ", t.describe(),
               " must have dtype ", dtype_name(stats_dtype(x.dtype())),
               " (the statistics dtype of x ", x.describe(), ")");
}

// An activation-shaped or parameter-shaped tensor: exact shape, x's dtype.
void check_like(std::string_view op, std::string_view arg, const Tensor& t, const Tensor& x,
                const Shape& shape) {
  check::usable(op, arg, t);
  check::shape_is(op, arg, t, shape);
  dispatch::dtype_like(op, arg, t, "x", x);
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd) {
  constexpr const char* op = "layernorm_forward";
  check::usable(op, "x", x);
  check::same_device(op, {{"x", &x},
                          {"weight", &weight},
                          {"bias", &bias},
                          {"y", &y},
                          {"mean", &mean},
                          {"rstd", &rstd}});
  dispatch::cpu_only(op, "x", x);
  const Rows r = rows_of(op, x);
  check_like(op, "weight", weight, x, {r.d});
  if (bias.defined()) check_like(op, "bias", bias, x, {r.d});
  check_like(op, "y", y, x, x.shape());
  check_stat(op, "mean", mean, x, r);
  check_stat(op, "rstd", rstd, x, r);
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::layernorm_forward<T>(x.data<T>(), weight.data<T>(),
                              bias.defined() ? bias.data<T>() : nullptr, r.rows, r.d, eps,
                              y.data<T>(), mean.data<S>(), rstd.data<S>());
  });
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias) {
  constexpr const char* op = "layernorm_backward";
  check::usable(op, "x", x);
  check::same_device(op, {{"dy", &dy},
                          {"x", &x},
                          {"weight", &weight},
                          {"mean", &mean},
                          {"rstd", &rstd},
                          {"dx", &dx},
                          {"dweight", &dweight},
                          {"dbias", &dbias}});
  dispatch::cpu_only(op, "x", x);
  const Rows r = rows_of(op, x);
  check_like(op, "dy", dy, x, x.shape());
  check_like(op, "weight", weight, x, {r.d});
  check_stat(op, "mean", mean, x, r);
  check_stat(op, "rstd", rstd, x, r);
  check_like(op, "dx", dx, x, x.shape());
  check_like(op, "dweight", dweight, x, {r.d});
  if (dbias.defined()) check_like(op, "dbias", dbias, x, {r.d});
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::layernorm_backward<T>(dy.data<T>(), x.data<T>(), weight.data<T>(), mean.data<S>(),
                               rstd.data<S>(), r.rows, r.d, dx.data<T>(), dweight.data<T>(),
                               dbias.defined() ? dbias.data<T>() : nullptr);
  });
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  constexpr const char* op = "rmsnorm_forward";
  check::usable(op, "x", x);
  check::same_device(op, {{"x", &x}, {"weight", &weight}, {"y", &y}, {"rstd", &rstd}});
  dispatch::cpu_only(op, "x", x);
  const Rows r = rows_of(op, x);
  check_like(op, "weight", weight, x, {r.d});
  check_like(op, "y", y, x, x.shape());
  check_stat(op, "rstd", rstd, x, r);
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::rmsnorm_forward<T>(x.data<T>(), weight.data<T>(), r.rows, r.d, eps, y.data<T>(),
                            rstd.data<S>());
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight) {
  constexpr const char* op = "rmsnorm_backward";
  check::usable(op, "x", x);
  check::same_device(op, {{"dy", &dy},
                          {"x", &x},
                          {"weight", &weight},
                          {"rstd", &rstd},
                          {"dx", &dx},
                          {"dweight", &dweight}});
  dispatch::cpu_only(op, "x", x);
  const Rows r = rows_of(op, x);
  check_like(op, "dy", dy, x, x.shape());
  check_like(op, "weight", weight, x, {r.d});
  check_stat(op, "rstd", rstd, x, r);
  check_like(op, "dx", dx, x, x.shape());
  check_like(op, "dweight", dweight, x, {r.d});
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::rmsnorm_backward<T>(dy.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<S>(), r.rows,
                             r.d, dx.data<T>(), dweight.data<T>());
  });
}

}  // namespace strata::ops

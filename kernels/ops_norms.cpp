// LayerNorm and RMSNorm front ends, forward and backward, and their fused residual-add forms (the
// add before the norm, and its gradient added to the norm's in backward): x is [rows..., d]; weight
// and bias [d]; the per-row statistics [rows...] (or flattened [rows]) in ops::stats_dtype. f32,
// f64, bf16 and f16 on the CPU; f32, bf16 and f16 on CUDA (kernels/cuda/norms.cu).
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norms.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/norms.h"
#endif

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

// The checks of a forward norm: x, weight, bias (may be undefined), y and the statistics (mean
// undefined for RMSNorm); with the fused residual add, residual_in and residual_out shaped as x.
Rows check_forward(const char* op, const Tensor& x, const Tensor* residual_in, const Tensor& weight,
                   const Tensor& bias, const Tensor* residual_out, const Tensor& y, const Tensor& mean,
                   const Tensor& rstd) {
  const Tensor none;
  check::usable(op, "x", x);
  check::same_device(op, {{"x", &x},
                          {"residual_in", residual_in ? residual_in : &none},
                          {"weight", &weight},
                          {"bias", &bias},
                          {"residual_out", residual_out ? residual_out : &none},
                          {"y", &y},
                          {"mean", &mean},
                          {"rstd", &rstd}});
  const Rows r = rows_of(op, x);
  if (residual_in) check_like(op, "residual_in", *residual_in, x, x.shape());
  if (residual_out) check_like(op, "residual_out", *residual_out, x, x.shape());
  check_like(op, "weight", weight, x, {r.d});
  if (bias.defined()) check_like(op, "bias", bias, x, {r.d});
  check_like(op, "y", y, x, x.shape());
  if (mean.defined()) check_stat(op, "mean", mean, x, r);
  check_stat(op, "rstd", rstd, x, r);
  return r;
}

// On the CPU, the rows a forward norm is taken of: x, or residual_out = x + residual_in, added
// here first (the fused op is the add followed by the norm).
template <typename T>
const T* cpu_norm_input(const Tensor& x, const Tensor* residual_in, Tensor* residual_out) {
  if (!residual_in) return x.data<T>();
  cpu::add<T>(x.data<T>(), residual_in->data<T>(), x.numel(), residual_out->data<T>());
  return residual_out->data<T>();
}

#if STRATA_CUDA
// The CUDA kernels take f32, bf16 and f16 (statistics f32). Checked before the statistics are
// read as f32 pointers, which would otherwise be the first to object, in a message without the op.
void cuda_dtype(const char* op, const Tensor& x) {
  STRATA_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16 || x.dtype() == DType::f16, op,
               ": argument 'x' ", x.describe(), " has an unsupported dtype; ", op,
               " takes f32, bf16 or f16 on CUDA");
}

// A pointer argument of the CUDA launchers: null where the tensor is absent.
void* raw_or_null(const Tensor* t) { return t ? t->raw() : nullptr; }
#endif

// layernorm_forward, and with residual_in / residual_out (both or neither) add_layernorm_forward.
void layernorm(const char* op, const Tensor& x, const Tensor* residual_in, const Tensor& weight,
               const Tensor& bias, double eps, Tensor* residual_out, Tensor& y, Tensor& mean,
               Tensor& rstd) {
  check::usable(op, "mean", mean);  // check_forward takes an undefined mean as RMSNorm's
  const Rows r = check_forward(op, x, residual_in, weight, bias, residual_out, y, mean, rstd);
  const void* bias_raw = bias.defined() ? bias.raw() : nullptr;
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    cuda_dtype(op, x);
    cuda::layernorm_forward(x.raw(), raw_or_null(residual_in), weight.raw(), bias_raw, x.dtype(),
                            r.rows, r.d, eps, raw_or_null(residual_out), y.raw(), mean.data<float>(),
                            rstd.data<float>(), dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    const T* v = cpu_norm_input<T>(x, residual_in, residual_out);
    cpu::layernorm_forward<T>(v, weight.data<T>(), static_cast<const T*>(bias_raw), r.rows, r.d,
                              eps, y.data<T>(), mean.data<S>(), rstd.data<S>());
  });
}

// rmsnorm_forward, and with residual_in / residual_out add_rmsnorm_forward.
void rmsnorm(const char* op, const Tensor& x, const Tensor* residual_in, const Tensor& weight,
             double eps, Tensor* residual_out, Tensor& y, Tensor& rstd) {
  const Tensor none;
  const Rows r = check_forward(op, x, residual_in, weight, none, residual_out, y, none, rstd);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    cuda_dtype(op, x);
    cuda::rmsnorm_forward(x.raw(), raw_or_null(residual_in), weight.raw(), x.dtype(), r.rows, r.d,
                          eps, raw_or_null(residual_out), y.raw(), rstd.data<float>(),
                          dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    const T* v = cpu_norm_input<T>(x, residual_in, residual_out);
    cpu::rmsnorm_forward<T>(v, weight.data<T>(), r.rows, r.d, eps, y.data<T>(), rstd.data<S>());
  });
}

#if STRATA_CUDA
// Device scratch for the backward kernels' partial parameter-gradient sums, from x's device.
Tensor backward_scratch(const char* op, const Tensor& x, const Rows& r, bool with_bias) {
  return Tensor::empty({cuda::norm_backward_scratch(r.rows, r.d, with_bias)}, DType::f32,
                       cuda_device_for(op, "x", x));
}
#endif

// The checks of a backward norm: dy, x, weight, the statistics (mean null for RMSNorm), dx, dweight
// and dbias (may be undefined); with the fused residual add, dresidual shaped as x.
Rows check_backward(const char* op, const Tensor& dy, const Tensor* dresidual, const Tensor& x,
                    const Tensor& weight, const Tensor* mean, const Tensor& rstd, const Tensor& dx,
                    const Tensor& dweight, const Tensor& dbias) {
  const Tensor none;
  check::usable(op, "x", x);
  check::same_device(op, {{"dy", &dy},
                          {"dresidual", dresidual ? dresidual : &none},
                          {"x", &x},
                          {"weight", &weight},
                          {"mean", mean ? mean : &none},
                          {"rstd", &rstd},
                          {"dx", &dx},
                          {"dweight", &dweight},
                          {"dbias", &dbias}});
  const Rows r = rows_of(op, x);
  check_like(op, "dy", dy, x, x.shape());
  if (dresidual) check_like(op, "dresidual", *dresidual, x, x.shape());
  check_like(op, "weight", weight, x, {r.d});
  if (mean) check_stat(op, "mean", *mean, x, r);
  check_stat(op, "rstd", rstd, x, r);
  check_like(op, "dx", dx, x, x.shape());
  check_like(op, "dweight", dweight, x, {r.d});
  if (dbias.defined()) check_like(op, "dbias", dbias, x, {r.d});
  return r;
}

// layernorm_backward, and with dresidual add_layernorm_backward (dx = dresidual + the norm's dx).
void layernorm_grad(const char* op, const Tensor& dy, const Tensor* dresidual, const Tensor& x,
                    const Tensor& weight, const Tensor& mean, const Tensor& rstd, Tensor& dx,
                    Tensor& dweight, Tensor& dbias) {
  const Rows r = check_backward(op, dy, dresidual, x, weight, &mean, rstd, dx, dweight, dbias);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    cuda_dtype(op, x);
    Tensor scratch = backward_scratch(op, x, r, dbias.defined());
    cuda::layernorm_backward(dy.raw(), raw_or_null(dresidual), x.raw(), weight.raw(),
                             mean.data<float>(), rstd.data<float>(), x.dtype(), r.rows, r.d,
                             dx.raw(), dweight.raw(), dbias.defined() ? dbias.raw() : nullptr,
                             scratch.data<float>(), dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::layernorm_backward<T>(dy.data<T>(), dresidual ? dresidual->data<T>() : nullptr,
                               x.data<T>(), weight.data<T>(), mean.data<S>(), rstd.data<S>(),
                               r.rows, r.d, dx.data<T>(), dweight.data<T>(),
                               dbias.defined() ? dbias.data<T>() : nullptr);
  });
}

// rmsnorm_backward, and with dresidual add_rmsnorm_backward.
void rmsnorm_grad(const char* op, const Tensor& dy, const Tensor* dresidual, const Tensor& x,
                  const Tensor& weight, const Tensor& rstd, Tensor& dx, Tensor& dweight) {
  const Tensor none;
  const Rows r = check_backward(op, dy, dresidual, x, weight, nullptr, rstd, dx, dweight, none);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    cuda_dtype(op, x);
    Tensor scratch = backward_scratch(op, x, r, /*with_bias=*/false);
    cuda::rmsnorm_backward(dy.raw(), raw_or_null(dresidual), x.raw(), weight.raw(),
                           rstd.data<float>(), x.dtype(), r.rows, r.d, dx.raw(), dweight.raw(),
                           scratch.data<float>(), dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    using S = cpu::compute_t<T>;
    cpu::rmsnorm_backward<T>(dy.data<T>(), dresidual ? dresidual->data<T>() : nullptr,
                             x.data<T>(), weight.data<T>(), rstd.data<S>(), r.rows, r.d,
                             dx.data<T>(), dweight.data<T>());
  });
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd) {
  layernorm("layernorm_forward", x, nullptr, weight, bias, eps, nullptr, y, mean, rstd);
}

void add_layernorm_forward(const Tensor& x, const Tensor& residual_in, const Tensor& weight,
                           const Tensor& bias, double eps, Tensor& residual_out, Tensor& y,
                           Tensor& mean, Tensor& rstd) {
  layernorm("add_layernorm_forward", x, &residual_in, weight, bias, eps, &residual_out, y, mean,
            rstd);
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  rmsnorm("rmsnorm_forward", x, nullptr, weight, eps, nullptr, y, rstd);
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& residual_in, const Tensor& weight,
                         double eps, Tensor& residual_out, Tensor& y, Tensor& rstd) {
  rmsnorm("add_rmsnorm_forward", x, &residual_in, weight, eps, &residual_out, y, rstd);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias) {
  layernorm_grad("layernorm_backward", dy, nullptr, x, weight, mean, rstd, dx, dweight, dbias);
}

void add_layernorm_backward(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                            const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                            Tensor& dx, Tensor& dweight, Tensor& dbias) {
  layernorm_grad("add_layernorm_backward", dy, &dresidual, x, weight, mean, rstd, dx, dweight,
                 dbias);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight) {
  rmsnorm_grad("rmsnorm_backward", dy, nullptr, x, weight, rstd, dx, dweight);
}

void add_rmsnorm_backward(const Tensor& dy, const Tensor& dresidual, const Tensor& x,
                          const Tensor& weight, const Tensor& rstd, Tensor& dx, Tensor& dweight) {
  rmsnorm_grad("add_rmsnorm_backward", dy, &dresidual, x, weight, rstd, dx, dweight);
}

}  // namespace strata::ops

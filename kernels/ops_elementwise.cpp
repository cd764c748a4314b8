// Front ends of the elementwise ops and reductions: cast, fill, add, scale, axpy, sum,
// sum_squares, l2_norm. On the CPU f32, f64, bf16 and f16 (the 16-bit ones computed in f32); on
// CUDA f32, bf16 and f16 (kernels/cuda/elementwise.cu).
#include <cmath>

#include "kernels/cpu/elementwise.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "core/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#endif

namespace strata::ops {
namespace {

// sum_i x_i, or sum_i x_i^2, in f64; `op` names the caller in errors.
double reduce(const char* op, const Tensor& x, bool squares) {
  double result = 0;
  if (dispatch::elementwise_args(op, {{"x", &x}})) {
#if STRATA_CUDA
    // Partial sums and the result on the device; the result is then read back, which waits for
    // the stream (a reduction to a host value is a synchronisation by nature).
    CudaDevice& device = cuda_device_for(op, "x", x);
    Tensor scratch = Tensor::empty({cuda::reduce_scratch(x.numel()) + 1}, DType::f64, device);
    double* partial = scratch.data<double>();
    cuda::reduce_sum(x.raw(), x.dtype(), x.numel(), squares, partial + 1, partial, device.stream());
    STRATA_CUDA_CHECK(cudaMemcpyAsync(&result, partial, sizeof result, cudaMemcpyDeviceToHost, device.stream()));
    device.synchronize();
#endif
    return result;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
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
  STRATA_CHECK(src.shape() == dst.shape(), op, ": argument 'dst' ", dst.describe(),
               " must have the shape of 'src' ", src.describe());
  if (dispatch::on_cuda(op, "src", src)) {
#if STRATA_CUDA
    cuda::cast(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel(), dispatch::stream_of(op, "src", src));
#endif
    return;
  }
  dispatch::floating(op, "src", src, [&](auto s_tag) {
    using S = decltype(s_tag);
    dispatch::floating(op, "dst", dst, [&](auto d_tag) {
      using D = decltype(d_tag);
      cpu::cast<S, D>(src.data<S>(), src.numel(), dst.data<D>());
    });
  });
}

void fill(Tensor& x, double value) {
  constexpr const char* op = "fill";
  if (dispatch::elementwise_args(op, {{"x", &x}})) {
#if STRATA_CUDA
    cuda::fill(x.raw(), x.dtype(), x.numel(), value, dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::fill<T>(x.data<T>(), x.numel(), value);
  });
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  constexpr const char* op = "add";
  if (dispatch::elementwise_args(op, {{"a", &a}, {"b", &b}, {"out", &out}})) {
#if STRATA_CUDA
    cuda::add(a.raw(), b.raw(), out.raw(), a.dtype(), a.numel(), dispatch::stream_of(op, "a", a));
#endif
    return;
  }
  dispatch::floating(op, "a", a, [&](auto tag) {
    using T = decltype(tag);
    cpu::add<T>(a.data<T>(), b.data<T>(), a.numel(), out.data<T>());
  });
}

void scale(Tensor& x, double alpha) {
  constexpr const char* op = "scale";
  if (dispatch::elementwise_args(op, {{"x", &x}})) {
#if STRATA_CUDA
    cuda::scale(x.raw(), x.dtype(), x.numel(), alpha, dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::scale<T>(x.data<T>(), x.numel(), alpha);
  });
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  constexpr const char* op = "axpy";
  const bool widen = y.dtype() == DType::f32 && (x.dtype() == DType::bf16 || x.dtype() == DType::f16);
  bool cuda = false;
  if (widen) {
    // The one mixed case: 16-bit values accumulated into f32 (mixed-precision gradients).
    check::usable(op, "x", x);
    check::usable(op, "y", y);
    check::same_device(op, {{"x", &x}, {"y", &y}});
    STRATA_CHECK(x.shape() == y.shape(), "axpy: argument 'x' ", x.describe(),
                 " must have the shape of 'y' ", y.describe());
    cuda = dispatch::on_cuda(op, "x", x);
  } else {
    cuda = dispatch::elementwise_args(op, {{"x", &x}, {"y", &y}});
  }
  if (cuda) {
#if STRATA_CUDA
    cuda::axpy(alpha, x.raw(), x.dtype(), y.raw(), y.dtype(), x.numel(), dispatch::stream_of(op, "y", y));
#endif
    return;
  }
  if (widen) {
    if (x.dtype() == DType::bf16)
      cpu::axpy_widen<bf16>(alpha, x.data<bf16>(), x.numel(), y.data<float>());
    else
      cpu::axpy_widen<f16>(alpha, x.data<f16>(), x.numel(), y.data<float>());
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
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

void sum_into(const Tensor& x, double scale, Tensor& acc) {
  constexpr const char* op = "sum_into";
  const bool cuda = dispatch::elementwise_args(op, {{"x", &x}});
  check::usable(op, "acc", acc);
  check::same_device(op, {{"x", &x}, {"acc", &acc}});
  STRATA_CHECK(acc.numel() == 1 && acc.dtype() == DType::f64, op, ": argument 'acc' ", acc.describe(),
               " must be one f64 element");
  if (cuda) {
#if STRATA_CUDA
    CudaDevice& device = cuda_device_for(op, "x", x);
    Tensor scratch = Tensor::empty({cuda::reduce_scratch(x.numel())}, DType::f64, device);
    cuda::reduce_sum_into(x.raw(), x.dtype(), x.numel(), scale, scratch.data<double>(), acc.data<double>(),
                          device.stream());
#endif
    return;
  }
  acc.data<double>()[0] += scale * reduce(op, x, /*squares=*/false);
}

}  // namespace strata::ops

// GELU and SwiGLU front ends: elementwise, any shape; on the CPU f32/f64 and (computed in f32)
// bf16/f16, on CUDA f32, bf16 and f16 (kernels/cuda/activations.cu).
#include "kernels/cpu/activations.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/activations.h"
#endif

namespace strata::ops {

void gelu_forward(const Tensor& x, Tensor& y) {
  constexpr const char* op = "gelu_forward";
  if (dispatch::elementwise_args(op, {{"x", &x}, {"y", &y}})) {
#if STRATA_CUDA
    cuda::gelu_forward(x.raw(), x.dtype(), x.numel(), y.raw(), dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_forward<T>(x.data<T>(), x.numel(), y.data<T>());
  });
}

void gelu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  constexpr const char* op = "gelu_backward";
  if (dispatch::elementwise_args(op, {{"x", &x}, {"dy", &dy}, {"dx", &dx}})) {
#if STRATA_CUDA
    cuda::gelu_backward(dy.raw(), x.raw(), x.dtype(), x.numel(), dx.raw(), dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_backward<T>(dy.data<T>(), x.data<T>(), x.numel(), dx.data<T>());
  });
}

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& y) {
  constexpr const char* op = "swiglu_forward";
  if (dispatch::elementwise_args(op, {{"gate", &gate}, {"up", &up}, {"y", &y}})) {
#if STRATA_CUDA
    cuda::swiglu_forward(gate.raw(), up.raw(), gate.dtype(), gate.numel(), y.raw(),
                         dispatch::stream_of(op, "gate", gate));
#endif
    return;
  }
  dispatch::floating(op, "gate", gate, [&](auto tag) {
    using T = decltype(tag);
    cpu::swiglu_forward<T>(gate.data<T>(), up.data<T>(), gate.numel(), y.data<T>());
  });
}

void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  constexpr const char* op = "swiglu_backward";
  if (dispatch::elementwise_args(
          op, {{"gate", &gate}, {"dy", &dy}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}})) {
#if STRATA_CUDA
    cuda::swiglu_backward(dy.raw(), gate.raw(), up.raw(), gate.dtype(), gate.numel(), dgate.raw(), dup.raw(),
                          dispatch::stream_of(op, "gate", gate));
#endif
    return;
  }
  dispatch::floating(op, "gate", gate, [&](auto tag) {
    using T = decltype(tag);
    cpu::swiglu_backward<T>(dy.data<T>(), gate.data<T>(), up.data<T>(), gate.numel(),
                            dgate.data<T>(), dup.data<T>());
  });
}

}  // namespace strata::ops

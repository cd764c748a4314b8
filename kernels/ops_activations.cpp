// GELU and SwiGLU front ends: elementwise, any shape, f32/f64 and (computed in f32) bf16/f16.
#include "kernels/cpu/activations.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {

void gelu_forward(const Tensor& x, Tensor& y) {
  dispatch::elementwise("gelu_forward", {{"x", &x}, {"y", &y}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_forward<T>(x.data<T>(), x.numel(), y.data<T>());
  });
}

void gelu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  dispatch::elementwise("gelu_backward", {{"x", &x}, {"dy", &dy}, {"dx", &dx}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_backward<T>(dy.data<T>(), x.data<T>(), x.numel(), dx.data<T>());
  });
}

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& y) {
  dispatch::elementwise("swiglu_forward", {{"gate", &gate}, {"up", &up}, {"y", &y}}, [&](auto tag) {
    using T = decltype(tag);
    cpu::swiglu_forward<T>(gate.data<T>(), up.data<T>(), gate.numel(), y.data<T>());
  });
}

void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  dispatch::elementwise(
      "swiglu_backward",
      {{"gate", &gate}, {"dy", &dy}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}}, [&](auto tag) {
        using T = decltype(tag);
        cpu::swiglu_backward<T>(dy.data<T>(), gate.data<T>(), up.data<T>(), gate.numel(),
                                dgate.data<T>(), dup.data<T>());
      });
}

}  // namespace strata::ops

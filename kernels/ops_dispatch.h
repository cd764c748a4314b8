// How the op front ends (kernels/ops_*.cpp) reach their kernels: pick the backend from the tensors'
// device (CUDA tensors go to kernels/cuda, never through a silent copy to the host), check
// arguments against one another with messages that show both tensors, and turn a runtime DType
// into the C++ element type the kernels in kernels/cpu are templated on.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "core/tensor.h"
#include "kernels/ops_check.h"

#if STRATA_CUDA
#include <cuda_runtime.h>

#include "core/cuda/cuda_device.h"
#endif

namespace strata::ops::dispatch {

// Whether the op runs on the CUDA backend: t (whose device every argument shares, checked by
// check::same_device) is a CUDA tensor. A build without the backend refuses it here.
inline bool on_cuda(std::string_view op, std::string_view arg, const Tensor& t) {
  if (!t.defined() || t.device().is_cpu()) return false;
#if !STRATA_CUDA
  STRATA_FAIL(op, ": argument '", arg, "' ", t.describe(), " is on ", t.device().name(),
              " but this build has no CUDA backend");
#endif
  return true;
}

#if STRATA_CUDA
// The compute stream a CUDA op queues on: that of the CudaDevice t was allocated from.
inline cudaStream_t stream_of(std::string_view op, std::string_view arg, const Tensor& t) {
  return cuda_device_for(op, arg, t).stream();
}
#endif

// t is usable and has the shape and dtype of `ref` (named ref_arg in the message): the outputs
// and gradients of elementwise ops.
inline void like(std::string_view op, std::string_view arg, const Tensor& t,
                 std::string_view ref_arg, const Tensor& ref) {
  check::usable(op, arg, t);
  STRATA_CHECK(t.shape() == ref.shape() && t.dtype() == ref.dtype(), op, ": argument '", arg, "' ",
               t.describe(), " must match '", ref_arg, "' ", ref.describe(), " in shape and dtype");
}

// t has the dtype of `ref`; the message shows both tensors (shape and dtype).
inline void dtype_like(std::string_view op, std::string_view arg, const Tensor& t,
                       std::string_view ref_arg, const Tensor& ref) {
  STRATA_CHECK(t.dtype() == ref.dtype(), op, ": argument '", arg, "' ", t.describe(),
               " must have the dtype of '", ref_arg, "' ", ref.describe());
}

// t's dtype is one of `allowed`; the message shows the tensor (shape and dtype) and the list.
inline void dtype_in(std::string_view op, std::string_view arg, const Tensor& t,
                     std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype() == d) return;
  std::string names;
  for (DType d : allowed) names += (names.empty() ? "" : ", ") + std::string(dtype_name(d));
  STRATA_FAIL(op, ": argument '", arg, "' ", t.describe(), " has an unsupported dtype; ", op,
              " takes ", names, " on the CPU");
}

// Calls f(T{}) with T = float or double for f32 or f64; any other dtype throws an Error naming the
// op and the argument. For tensors that must hold full precision (AdamW's master weights).
template <typename F>
void real(std::string_view op, std::string_view arg, const Tensor& t, F&& f) {
  dtype_in(op, arg, t, {DType::f32, DType::f64});
  if (t.dtype() == DType::f32)
    f(float{});
  else
    f(double{});
}

// As real(), and also bf16 and f16: storage formats that the kernels widen on load and round to
// nearest even on store (kernels/cpu/element.h).
template <typename F>
void floating(std::string_view op, std::string_view arg, const Tensor& t, F&& f) {
  dtype_in(op, arg, t, {DType::f32, DType::f64, DType::bf16, DType::f16});
  switch (t.dtype()) {
    case DType::f32:
      f(float{});
      return;
    case DType::f64:
      f(double{});
      return;
    case DType::bf16:
      f(bf16{});
      return;
    default:
      f(f16{});
      return;
  }
}

// The checks of an elementwise op: every tensor in `args` is usable, on one device, and has the
// shape and dtype of the first. Returns on_cuda() of the first.
inline bool elementwise_args(std::string_view op,
                             std::initializer_list<std::pair<std::string_view, const Tensor*>> args) {
  const auto& [first_name, first] = *args.begin();
  check::usable(op, first_name, *first);
  check::same_device(op, args);
  for (const auto& [name, t] : args) like(op, name, *t, first_name, *first);
  return on_cuda(op, first_name, *first);
}

// Calls f(I{}) with I = int32_t or int64_t for an index tensor.
template <typename F>
void index(std::string_view op, std::string_view arg, const Tensor& t, F&& f) {
  dtype_in(op, arg, t, {DType::i32, DType::i64});
  if (t.dtype() == DType::i32)
    f(int32_t{});
  else
    f(int64_t{});
}

}  // namespace strata::ops::dispatch

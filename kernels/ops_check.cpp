#include "kernels/ops_check.h"

#include "kernels/ops.h"

namespace strata::ops {

DType stats_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

namespace check {

void usable(std::string_view op, std::string_view arg, const Tensor& t) {
  STRATA_CHECK(t.defined(), op, ": argument '", arg, "' is undefined");
  STRATA_CHECK(t.is_contiguous(), op, ": argument '", arg, "' ", t.describe(), " must be contiguous");
}

void same_device(std::string_view op,
                 std::initializer_list<std::pair<std::string_view, const Tensor*>> args) {
  const std::pair<std::string_view, const Tensor*>* first = nullptr;
  for (const auto& a : args) {
    if (!a.second->defined()) continue;
    if (!first) {
      first = &a;
      continue;
    }
    STRATA_CHECK(a.second->device() == first->second->device(), op, ": argument '", a.first, "' ",
                 a.second->describe(), " is not on the device of '", first->first, "' ",
                 first->second->describe());
  }
}

void shape_is(std::string_view op, std::string_view arg, const Tensor& t, const Shape& expected) {
  STRATA_CHECK(t.shape() == expected, op, ": argument '", arg, "' has shape ",
               shape_string(t.shape()), ", expected ", shape_string(expected));
}

void dtype_is(std::string_view op, std::string_view arg, const Tensor& t, DType expected) {
  STRATA_CHECK(t.dtype() == expected, op, ": argument '", arg, "' has dtype ", dtype_name(t.dtype()),
               ", expected ", dtype_name(expected));
}

void dtype_in(std::string_view op, std::string_view arg, const Tensor& t,
              std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype() == d) return;
  std::string names;
  for (DType d : allowed) names += (names.empty() ? "" : ", ") + std::string(dtype_name(d));
  STRATA_FAIL(op, ": argument '", arg, "' has dtype ", dtype_name(t.dtype()), ", expected one of ",
              names);
}

void ndim_is(std::string_view op, std::string_view arg, const Tensor& t, int ndim) {
  STRATA_CHECK(t.ndim() == ndim, op, ": argument '", arg, "' ", t.describe(), " must have ", ndim,
               " dimensions");
}

void index_dtype(std::string_view op, std::string_view arg, const Tensor& t) {
  dtype_in(op, arg, t, {DType::i32, DType::i64});
}

}  // namespace check
}  // namespace strata::ops

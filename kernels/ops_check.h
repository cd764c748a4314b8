// Argument checks shared by the op front ends (kernels/ops_*.cpp): each throws an Error naming the
// op, the argument and what was expected, never lets a bad call reach a kernel.
#pragma once

#include <initializer_list>
#include <string_view>

#include "core/tensor.h"

namespace strata::ops::check {

// t is defined, contiguous, and on `device`.
void usable(std::string_view op, std::string_view arg, const Tensor& t);
void same_device(std::string_view op, std::initializer_list<std::pair<std::string_view, const Tensor*>> args);
void shape_is(std::string_view op, std::string_view arg, const Tensor& t, const Shape& expected);
void dtype_is(std::string_view op, std::string_view arg, const Tensor& t, DType expected);
void dtype_in(std::string_view op, std::string_view arg, const Tensor& t, std::initializer_list<DType> allowed);
void ndim_is(std::string_view op, std::string_view arg, const Tensor& t, int ndim);
// i32 or i64.
void index_dtype(std::string_view op, std::string_view arg, const Tensor& t);

}  // namespace strata::ops::check

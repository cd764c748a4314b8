// topk's front end: x [rows, n] f32/f64/bf16/f16 (f32/bf16/f16 on CUDA), 1 <= k <= n; values
// [rows, k] in x's dtype, indices [rows, k] i32. The checks are the same for both backends; the
// kernels are kernels/cpu/topk.h and kernels/cuda/topk.h.
#include <limits>

#include "kernels/cpu/topk.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/topk.h"
#endif

namespace strata::ops {

void topk(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) {
  constexpr const char* op = "topk";
  check::usable(op, "x", x);
  check::usable(op, "values", values);
  check::usable(op, "indices", indices);
  check::same_device(op, {{"x", &x}, {"values", &values}, {"indices", &indices}});
  check::ndim_is(op, "x", x, 2);
  const int64_t rows = x.size(0), n = x.size(1);
  STRATA_CHECK(k >= 1 && k <= n, op, ": k=", k, " must lie in [1, ", n, "] for x ", x.describe());
  STRATA_CHECK(n <= std::numeric_limits<int32_t>::max(), op, ": x ", x.describe(),
               " has more columns than i32 indices can name");
  check::shape_is(op, "values", values, {rows, k});
  check::shape_is(op, "indices", indices, {rows, k});
  dispatch::dtype_like(op, "values", values, "x", x);
  check::dtype_is(op, "indices", indices, DType::i32);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16});
    cuda::topk(x.raw(), x.dtype(), rows, n, k, values.raw(), indices.data<int32_t>(),
               dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::topk<T>(x.data<T>(), rows, n, k, values.data<T>(), indices.data<int32_t>());
  });
}

}  // namespace strata::ops

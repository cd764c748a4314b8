// RoPE front ends: x, y [batch, seq, heads, head_dim] with head_dim even; f32, f64, bf16 or f16 on
// the CPU, f32, bf16 or f16 on CUDA (kernels/cuda/rope.cu).
#include "kernels/cpu/rope.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/rope.h"
#endif

namespace strata::ops {
namespace {

// Forward rotates x into y; backward rotates dy back into dx (the inverse rotation).
void rope_apply(const char* op, const char* in_arg, const Tensor& in, const char* out_arg,
                Tensor& out, int64_t position_offset, double theta, bool inverse) {
  check::usable(op, in_arg, in);
  check::same_device(op, {{in_arg, &in}, {out_arg, &out}});
  check::ndim_is(op, in_arg, in, 4);
  STRATA_CHECK(in.size(3) % 2 == 0, op, ": argument '", in_arg, "' ", in.describe(),
               " needs an even head_dim (its last dim) to pair j with j + head_dim/2");
  STRATA_CHECK(theta > 0, op, ": theta must be positive, got ", theta);
  dispatch::like(op, out_arg, out, in_arg, in);
  if (dispatch::on_cuda(op, in_arg, in)) {
#if STRATA_CUDA
    cuda::rope(in.raw(), in.dtype(), in.size(0), in.size(1), in.size(2), in.size(3), position_offset, theta,
               inverse, out.raw(), dispatch::stream_of(op, in_arg, in));
#endif
    return;
  }
  dispatch::floating(op, in_arg, in, [&](auto tag) {
    using T = decltype(tag);
    cpu::rope<T>(in.data<T>(), in.size(0), in.size(1), in.size(2), in.size(3), position_offset,
                 theta, inverse, out.data<T>());
  });
}

}  // namespace

void rope_forward(const Tensor& x, int64_t position_offset, double theta, Tensor& y) {
  rope_apply("rope_forward", "x", x, "y", y, position_offset, theta, /*inverse=*/false);
}

void rope_backward(const Tensor& dy, int64_t position_offset, double theta, Tensor& dx) {
  rope_apply("rope_backward", "dy", dy, "dx", dx, position_offset, theta, /*inverse=*/true);
}

}  // namespace strata::ops

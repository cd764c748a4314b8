// Misuse of the dense ops: each wrong call throws a strata::Error whose message names the op and
// the shapes (or dtypes, or device) involved. One table: a name, the call, what the message says.
#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

Tensor f32(const Shape& shape) {
  return Tensor::zeros(shape, DType::f32);
}
Tensor f64(const Shape& shape) {
  return Tensor::zeros(shape, DType::f64);
}
Tensor of(const Shape& shape, DType dtype) {
  return Tensor::zeros(shape, dtype);
}
// A CUDA tensor that owns nothing (never dereferenced: the op must refuse it first).
Tensor on_cuda(const Shape& shape) {
  static float dummy;
  return Tensor::wrap(&dummy, shape, DType::f32, Device::cuda(0));
}

struct Misuse {
  const char* name;
  std::function<void()> call;
  std::vector<std::string> message;  // substrings the error must contain
};

const std::vector<Misuse>& table() {
  static const std::vector<Misuse> cases = {
      {"gemm_inner_mismatch",
       [] {
         Tensor c = f32({3, 6});
         ops::gemm(f32({3, 4}), f32({5, 6}), c);
       },
       {"gemm", "[3, 4]", "[5, 6]"}},
      {"gemm_transposed_mismatch",
       [] {
         Tensor c = f32({4, 6});
         ops::gemm(f32({3, 4}), f32({4, 6}), c, {true, false});
       },
       {"gemm", "[3, 4]", "(transposed)", "[4, 6]"}},
      {"gemm_output_shape",
       [] {
         Tensor c = f32({3, 5});
         ops::gemm(f32({3, 4}), f32({4, 6}), c);
       },
       {"gemm", "'c'", "[3, 5]", "[3, 6]"}},
      {"gemm_batch_mismatch",
       [] {
         Tensor c = f32({2, 3, 6});
         ops::gemm(f32({2, 3, 4}), f32({3, 4, 6}), c);
       },
       {"gemm", "[2, 3, 4]", "[3, 4, 6]"}},
      {"gemm_dtype_mismatch",
       [] {
         Tensor c = f32({3, 6});
         ops::gemm(f32({3, 4}), f64({4, 6}), c);
       },
       {"gemm", "'b'", "f64[4, 6]", "f32[3, 4]"}},
      {"gemm_integer",
       [] {
         Tensor c = of({3, 6}, DType::i32);
         ops::gemm(of({3, 4}, DType::i32), of({4, 6}, DType::i32), c);
       },
       {"gemm", "i32[3, 4]", "f32, f64, bf16, f16"}},
      {"gemm_on_cuda",
       [] {
         Tensor c = on_cuda({3, 6});
         ops::gemm(on_cuda({3, 4}), on_cuda({4, 6}), c);
       },
       // gemm has a CUDA path, which needs the CudaDevice (stream, cuBLASLt plans) behind a tensor.
       {"gemm", "cuda:0", "not allocated by a CudaDevice"}},
      {"layernorm_weight_shape",
       [] {
         Tensor y = f32({3, 17}), mean = f32({3}), rstd = f32({3});
         ops::layernorm_forward(f32({3, 17}), f32({16}), Tensor(), 1e-5, y, mean, rstd);
       },
       {"layernorm_forward", "'weight'", "[16]", "[17]"}},
      {"layernorm_stats_dtype",
       [] {
         Tensor y = f64({3, 17}), mean = f32({3}), rstd = f64({3});
         ops::layernorm_forward(f64({3, 17}), f64({17}), Tensor(), 1e-5, y, mean, rstd);
       },
       {"layernorm_forward", "'mean'", "f32[3]", "f64[3, 17]"}},
      {"layernorm_backward_dx_shape",
       [] {
         Tensor dx = f32({3, 16}), dw = f32({17}), db;
         ops::layernorm_backward(f32({3, 17}), f32({3, 17}), f32({17}), f32({3}), f32({3}), dx, dw,
                                 db);
       },
       {"layernorm_backward", "'dx'", "[3, 16]", "[3, 17]"}},
      {"rmsnorm_dtype_mismatch",
       [] {
         Tensor y = f32({2, 8}), rstd = f32({2});
         ops::rmsnorm_forward(f32({2, 8}), f64({8}), 1e-5, y, rstd);
       },
       {"rmsnorm_forward", "'weight'", "f64[8]", "f32[2, 8]"}},
      {"rmsnorm_bf16_stats",
       [] {
         Tensor y = of({2, 8}, DType::bf16), rstd = of({2}, DType::bf16);
         ops::rmsnorm_forward(of({2, 8}, DType::bf16), of({8}, DType::bf16), 1e-5, y, rstd);
       },
       {"rmsnorm_forward", "'rstd'", "bf16[2]", "must have dtype f32", "bf16[2, 8]"}},
      {"rmsnorm_backward_rstd_shape",
       [] {
         Tensor dx = f32({2, 8}), dw = f32({8});
         ops::rmsnorm_backward(f32({2, 8}), f32({2, 8}), f32({8}), f32({3}), dx, dw);
       },
       {"rmsnorm_backward", "'rstd'", "[3]", "[2]"}},
      {"add_layernorm_residual_shape",
       [] {
         Tensor sum = f32({3, 17}), y = f32({3, 17}), mean = f32({3}), rstd = f32({3});
         ops::add_layernorm_forward(f32({3, 17}), f32({3, 16}), f32({17}), Tensor(), 1e-5, sum, y,
                                    mean, rstd);
       },
       {"add_layernorm_forward", "'residual_in'", "[3, 16]", "[3, 17]"}},
      {"add_rmsnorm_residual_out_dtype",
       [] {
         Tensor sum = f64({2, 8}), y = f32({2, 8}), rstd = f32({2});
         ops::add_rmsnorm_forward(f32({2, 8}), f32({2, 8}), f32({8}), 1e-5, sum, y, rstd);
       },
       {"add_rmsnorm_forward", "'residual_out'", "f64[2, 8]", "f32[2, 8]"}},
      {"gelu_shape",
       [] {
         Tensor y = f32({4, 3});
         ops::gelu_forward(f32({3, 4}), y);
       },
       {"gelu_forward", "[4, 3]", "[3, 4]"}},
      {"gelu_backward_dtype",
       [] {
         Tensor dx = f32({3});
         ops::gelu_backward(f64({3}), f32({3}), dx);
       },
       {"gelu_backward", "'dy'", "f64[3]", "f32[3]"}},
      {"gelu_integer",
       [] {
         Tensor y = of({3}, DType::i32);
         ops::gelu_forward(of({3}, DType::i32), y);
       },
       {"gelu_forward", "i32[3]"}},
      // gelu has a CUDA implementation: a wrapped CUDA pointer is refused by a build without the
      // backend ("no CUDA backend") and by one with it (no CudaDevice, so no stream to run on).
      {"gelu_on_cuda",
       [] {
         Tensor y = on_cuda({3});
         ops::gelu_forward(on_cuda({3}), y);
       },
       {"gelu_forward", "'x'", "f32[3]@cuda:0"}},
      {"gelu_mixed_devices",
       [] {
         Tensor y = on_cuda({3});
         ops::gelu_forward(f32({3}), y);
       },
       {"gelu_forward", "'y'", "cuda:0", "f32[3]@cpu"}},
      {"swiglu_shape",
       [] {
         Tensor y = f32({2, 5});
         ops::swiglu_forward(f32({2, 5}), f32({2, 6}), y);
       },
       {"swiglu_forward", "'up'", "[2, 6]", "[2, 5]"}},
      {"swiglu_backward_dtype",
       [] {
         Tensor dg = f32({5}), du = f64({5});
         ops::swiglu_backward(f32({5}), f32({5}), f32({5}), dg, du);
       },
       {"swiglu_backward", "'dup'", "f64[5]", "f32[5]"}},
      {"rope_odd_head_dim",
       [] {
         Tensor y = f32({1, 2, 1, 3});
         ops::rope_forward(f32({1, 2, 1, 3}), 0, 1e4, y);
       },
       {"rope_forward", "[1, 2, 1, 3]", "even"}},
      {"rope_rank",
       [] {
         Tensor y = f32({2, 4});
         ops::rope_forward(f32({2, 4}), 0, 1e4, y);
       },
       {"rope_forward", "[2, 4]", "4 dimensions"}},
      {"rope_backward_shape",
       [] {
         Tensor dx = f32({1, 2, 1, 6});
         ops::rope_backward(f32({1, 2, 1, 4}), 0, 1e4, dx);
       },
       {"rope_backward", "[1, 2, 1, 6]", "[1, 2, 1, 4]"}},
      {"embedding_out_shape",
       [] {
         Tensor out = f32({4, 7});
         ops::embedding_forward(of({5}, DType::i32), f32({10, 7}), 0, out);
       },
       {"embedding_forward", "'out'", "[4, 7]", "[5, 7]"}},
      {"embedding_float_ids",
       [] {
         Tensor out = f32({5, 7});
         ops::embedding_forward(f32({5}), f32({10, 7}), 0, out);
       },
       {"embedding_forward", "'ids'", "f32[5]", "i32, i64"}},
      {"embedding_backward_dtype",
       [] {
         Tensor dt = f32({10, 7});
         ops::embedding_backward(f64({5, 7}), of({5}, DType::i64), 0, dt);
       },
       {"embedding_backward", "'dout'", "f64[5, 7]", "f32[10, 7]"}},
      {"adamw_state_shape",
       [] {
         Tensor p = f32({8}), m = f32({7}), v = f32({8});
         ops::adamw(p, f32({8}), m, v, {});
       },
       {"adamw", "'m'", "[7]", "[8]"}},
      {"adamw_grad_dtype",
       [] {
         Tensor p = f32({8}), m = f32({8}), v = f32({8});
         ops::adamw(p, f64({8}), m, v, {});
       },
       {"adamw", "'grad'", "f64[8]", "f32, bf16, f16"}},
      {"adamw_step_zero",
       [] {
         Tensor p = f32({8}), m = f32({8}), v = f32({8});
         ops::AdamWArgs args;
         args.step = 0;
         ops::adamw(p, f32({8}), m, v, args);
       },
       {"adamw", "step", "got 0"}},
      {"cast_shape",
       [] {
         Tensor dst = f64({2, 3});
         ops::cast(f32({3, 2}), dst);
       },
       {"cast", "f64[2, 3]", "f32[3, 2]"}},
      {"cast_integer",
       [] {
         Tensor dst = of({4}, DType::i64);
         ops::cast(f32({4}), dst);
       },
       {"cast", "'dst'", "i64[4]"}},
      {"add_shape",
       [] {
         Tensor out = f32({3});
         ops::add(f32({3}), f32({4}), out);
       },
       {"add", "'b'", "[4]", "[3]"}},
      {"add_dtype",
       [] {
         Tensor out = f32({3});
         ops::add(f32({3}), of({3}, DType::bf16), out);
       },
       {"add", "'b'", "bf16[3]", "f32[3]"}},
      {"axpy_shape",
       [] {
         Tensor y = f32({2, 2});
         ops::axpy(1.0, f32({4}), y);
       },
       {"axpy", "'y'", "[2, 2]", "[4]"}},
      {"scale_integer",
       [] {
         Tensor x = of({3}, DType::i32);
         ops::scale(x, 2.0);
       },
       {"scale", "i32[3]"}},
      {"l2_norm_integer", [] { ops::l2_norm(of({3}, DType::u16)); }, {"l2_norm", "u16[3]"}},
      {"sum_undefined", [] { ops::sum(Tensor()); }, {"sum", "'x'", "undefined"}},
      {"topk_k_too_large",
       [] {
         Tensor v = f32({2, 5}), i = of({2, 5}, DType::i32);
         ops::topk(f32({2, 4}), 5, v, i);
       },
       {"topk", "k=5", "[2, 4]"}},
      {"topk_index_dtype",
       [] {
         Tensor v = f32({2, 2}), i = of({2, 2}, DType::i64);
         ops::topk(f32({2, 4}), 2, v, i);
       },
       {"topk", "'indices'", "i64", "i32"}},
      {"topk_values_shape",
       [] {
         Tensor v = f32({2, 3}), i = of({2, 2}, DType::i32);
         ops::topk(f32({2, 4}), 2, v, i);
       },
       {"topk", "'values'", "[2, 3]", "[2, 2]"}},
  };
  return cases;
}

class Misuses : public ::testing::TestWithParam<size_t> {};

TEST_P(Misuses, ThrowsErrorNamingOpAndShapes) {
  const Misuse& m = table()[GetParam()];
  expect_error(m.call, m.message);
}

INSTANTIATE_TEST_SUITE_P(Ops, Misuses, ::testing::Range<size_t>(0, table().size()),
                         [](const ::testing::TestParamInfo<size_t>& param_info) {
                           return std::string(table()[param_info.param].name);
                         });

}  // namespace
}  // namespace strata::testing

// CUDA LayerNorm and RMSNorm against the CPU (op_parity.h): forward (layernorm with and without a
// bias), backward (dx overwritten, dweight and dbias accumulated into nonzero buffers), and the
// fused residual add + norm forward and backward (out of place and in place, and backward with a
// misaligned dresidual), over rows 1, 3, 17, and 1030 for backward (whose blocks then take several
// rows each), and d = 1, 7, 33, 129, 769 (no vector path)
// and 8, 64, 768 (the vector path of every dtype), with a 3-D x whose statistics keep its leading
// shape.
//
// Tolerances: the CUDA kernels compute in f32 where the CPU sums in f64, so f32 outputs get the
// f32 bound, 1e-5 of the largest value; the statistics are f32 whatever the input dtype and are
// taken of the same stored values, so they get 1e-5 too. 16-bit outputs get dtype_tolerance: each
// side rounds once to the format, so they differ by at most one unit in the last place. That
// holds for the accumulated bf16 dweight and dbias as well: both backends add the whole sum over
// rows to the old value and round once (the f32 partial sums are far finer than bf16).
#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

constexpr double kEps = 1e-5;

// Shapes of x: [rows..., d].
const std::vector<Shape>& norm_shapes() {
  static const std::vector<Shape> shapes = {{1, 1},  {3, 7},  {17, 33}, {1, 129},
                                            {3, 769}, {17, 8}, {3, 64},  {1, 768}, {2, 3, 33}};
  return shapes;
}
// Enough rows that each backward block takes several (kernels/cuda/norms.cu: at most 512 blocks),
// in the scalar and the vector path; only backward partitions rows, so only backward runs these.
const std::vector<Shape>& many_row_shapes() {
  static const std::vector<Shape> shapes = {{1030, 3}, {1030, 8}};
  return shapes;
}

// The leading shape of x (the statistics' shape) and its last dim.
Shape leading(const Shape& x) { return Shape(x.begin(), x.end() - 1); }
Shape last(const Shape& x) { return {x.back()}; }

std::string tag(const Shape& s, DType d) { return shape_tag(s) + "_" + std::string(dtype_name(d)); }

Tensor stats(const Shape& x, Allocator& a) { return Tensor::empty(leading(x), DType::f32, a); }

void add_forward_cases(std::vector<OpCase>& out, const Shape& s, DType d) {
  const double tol = dtype_tolerance(d);
  const InputSpec x{"x", s, d, -2, 3}, weight{"weight", last(s), d, 0.5, 1.5}, bias{"bias", last(s), d};
  out.push_back({"layernorm_forward_" + tag(s, d), {x, weight, bias},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor mean = stats(in[0].shape(), a), rstd = stats(in[0].shape(), a);
                   ops::layernorm_forward(in[0], in[1], in[2], kEps, y, mean, rstd);
                   return std::vector<Tensor>{y, mean, rstd};
                 },
                 {tol, 1e-5, 1e-5}});
  out.push_back({"layernorm_forward_no_bias_" + tag(s, d), {x, weight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor mean = stats(in[0].shape(), a), rstd = stats(in[0].shape(), a);
                   ops::layernorm_forward(in[0], in[1], Tensor(), kEps, y, mean, rstd);
                   return std::vector<Tensor>{y, mean, rstd};
                 },
                 {tol, 1e-5, 1e-5}});
  out.push_back({"rmsnorm_forward_" + tag(s, d), {x, weight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor rstd = stats(in[0].shape(), a);
                   ops::rmsnorm_forward(in[0], in[1], kEps, y, rstd);
                   return std::vector<Tensor>{y, rstd};
                 },
                 {tol, 1e-5}});
}

void add_backward_cases(std::vector<OpCase>& out, const Shape& s, DType d) {
  const double tol = dtype_tolerance(d);
  // Statistics as a forward pass of inputs like x would save them (any values are valid input).
  const InputSpec dy{"dy", s, d}, x{"x", s, d, -2, 3}, weight{"weight", last(s), d, 0.5, 1.5},
      mean{"mean", leading(s), DType::f32, -0.2, 0.8}, rstd{"rstd", leading(s), DType::f32, 0.5, 2.0},
      dweight{"dweight", last(s), d}, dbias{"dbias", last(s), d};
  out.push_back({"layernorm_backward_" + tag(s, d), {dy, x, weight, mean, rstd, dweight, dbias},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   ops::layernorm_backward(in[0], in[1], in[2], in[3], in[4], dx, in[5], in[6]);
                   return std::vector<Tensor>{dx, in[5], in[6]};
                 },
                 {tol}});
  out.push_back({"layernorm_backward_no_bias_" + tag(s, d), {dy, x, weight, mean, rstd, dweight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a), no_bias;
                   ops::layernorm_backward(in[0], in[1], in[2], in[3], in[4], dx, in[5], no_bias);
                   return std::vector<Tensor>{dx, in[5]};
                 },
                 {tol}});
  out.push_back({"rmsnorm_backward_" + tag(s, d), {dy, x, weight, rstd, dweight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   ops::rmsnorm_backward(in[0], in[1], in[2], in[3], dx, in[4]);
                   return std::vector<Tensor>{dx, in[4]};
                 },
                 {tol}});
}

// The fused forms: residual_out a new tensor (layernorm) or x itself (rmsnorm, in place), and
// residual_in itself (layernorm, in place on the residual stream).
void add_fused_cases(std::vector<OpCase>& out, const Shape& s, DType d) {
  const double tol = dtype_tolerance(d);
  const InputSpec x{"x", s, d, -2, 3}, residual{"residual_in", s, d}, weight{"weight", last(s), d, 0.5, 1.5},
      bias{"bias", last(s), d};
  out.push_back({"add_layernorm_forward_" + tag(s, d), {x, residual, weight, bias},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor sum = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor mean = stats(in[0].shape(), a), rstd = stats(in[0].shape(), a);
                   ops::add_layernorm_forward(in[0], in[1], in[2], in[3], kEps, sum, y, mean, rstd);
                   return std::vector<Tensor>{sum, y, mean, rstd};
                 },
                 {tol, tol, 1e-5, 1e-5}});
  out.push_back({"add_layernorm_forward_in_place_" + tag(s, d), {x, residual, weight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor mean = stats(in[0].shape(), a), rstd = stats(in[0].shape(), a);
                   ops::add_layernorm_forward(in[0], in[1], in[2], Tensor(), kEps, in[1], y, mean, rstd);
                   return std::vector<Tensor>{in[1], y, mean, rstd};
                 },
                 {tol, tol, 1e-5, 1e-5}});
  out.push_back({"add_rmsnorm_forward_in_place_" + tag(s, d), {x, residual, weight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   Tensor rstd = stats(in[0].shape(), a);
                   ops::add_rmsnorm_forward(in[0], in[1], in[2], kEps, in[0], y, rstd);
                   return std::vector<Tensor>{in[0], y, rstd};
                 },
                 {tol, tol, 1e-5}});
}

// The fused backward (dx = dresidual + the norm's dx): out of place (layernorm with a bias,
// rmsnorm), and in place on the residual stream's gradient, dx being dresidual (layernorm without
// a bias, rmsnorm), with dweight and dbias accumulated as for the plain backward.
void add_fused_backward_cases(std::vector<OpCase>& out, const Shape& s, DType d) {
  const double tol = dtype_tolerance(d);
  const InputSpec dy{"dy", s, d}, dresidual{"dresidual", s, d}, x{"x", s, d, -2, 3},
      weight{"weight", last(s), d, 0.5, 1.5}, mean{"mean", leading(s), DType::f32, -0.2, 0.8},
      rstd{"rstd", leading(s), DType::f32, 0.5, 2.0}, dweight{"dweight", last(s), d}, dbias{"dbias", last(s), d};
  out.push_back({"add_layernorm_backward_" + tag(s, d), {dy, dresidual, x, weight, mean, rstd, dweight, dbias},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   ops::add_layernorm_backward(in[0], in[1], in[2], in[3], in[4], in[5], dx, in[6], in[7]);
                   return std::vector<Tensor>{dx, in[6], in[7]};
                 },
                 {tol}});
  out.push_back({"add_layernorm_backward_in_place_" + tag(s, d), {dy, dresidual, x, weight, mean, rstd, dweight},
                 [](std::vector<Tensor>& in, Allocator&) {
                   Tensor no_bias;
                   ops::add_layernorm_backward(in[0], in[1], in[2], in[3], in[4], in[5], in[1], in[6], no_bias);
                   return std::vector<Tensor>{in[1], in[6]};
                 },
                 {tol}});
  out.push_back({"add_rmsnorm_backward_" + tag(s, d), {dy, dresidual, x, weight, rstd, dweight},
                 [](std::vector<Tensor>& in, Allocator& a) {
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   ops::add_rmsnorm_backward(in[0], in[1], in[2], in[3], in[4], dx, in[5]);
                   return std::vector<Tensor>{dx, in[5]};
                 },
                 {tol}});
  out.push_back({"add_rmsnorm_backward_in_place_" + tag(s, d), {dy, dresidual, x, weight, rstd, dweight},
                 [](std::vector<Tensor>& in, Allocator&) {
                   ops::add_rmsnorm_backward(in[0], in[1], in[2], in[3], in[4], in[1], in[5]);
                   return std::vector<Tensor>{in[1], in[5]};
                 },
                 {tol}});
}

// A dresidual one element into its buffer, so not 16-byte aligned where every other tensor is: the
// kernel must leave the vector path for all of them (a row width that would take it).
void add_misaligned_residual_case(std::vector<OpCase>& out, const Shape& s, DType d) {
  const int64_t n = s[0] * s[1];
  const InputSpec dy{"dy", s, d}, dresidual{"dresidual", {n + 1}, d}, x{"x", s, d, -2, 3},
      weight{"weight", last(s), d, 0.5, 1.5}, rstd{"rstd", leading(s), DType::f32, 0.5, 2.0},
      dweight{"dweight", last(s), d};
  out.push_back({"add_rmsnorm_backward_misaligned_residual_" + tag(s, d), {dy, dresidual, x, weight, rstd, dweight},
                 [n](std::vector<Tensor>& in, Allocator& a) {
                   const Tensor shifted = in[1].slice(0, 1, n + 1).view(in[0].shape());
                   Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                   ops::add_rmsnorm_backward(in[0], shifted, in[2], in[3], in[4], dx, in[5]);
                   return std::vector<Tensor>{dx, in[5]};
                 },
                 {dtype_tolerance(d)}});
}

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const Shape& s : norm_shapes())
    for (DType d : cuda_dtypes()) {
      add_forward_cases(out, s, d);
      add_backward_cases(out, s, d);
      add_fused_cases(out, s, d);
      add_fused_backward_cases(out, s, d);
    }
  for (const Shape& s : many_row_shapes())
    for (DType d : cuda_dtypes()) {
      add_backward_cases(out, s, d);
      add_fused_backward_cases(out, s, d);
    }
  for (DType d : cuda_dtypes()) add_misaligned_residual_case(out, {17, 64}, d);
  return out;
}

class NormParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(NormParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, NormParity, ::testing::ValuesIn(cases()), CaseName());

// What the CUDA path refuses before any kernel runs: f64 (the backend takes f32, bf16, f16) and an
// argument on another device.
TEST(NormCudaMisuse, ErrorsNameTheOpAndArgument) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  auto on = [&](const Shape& s, DType d) { return Tensor::zeros(s, d, device); };
  expect_misuse_errors({
      {"layernorm_f64",
       [&] {
         Tensor y = on({2, 8}, DType::f64), mean = on({2}, DType::f64), rstd = on({2}, DType::f64);
         ops::layernorm_forward(on({2, 8}, DType::f64), on({8}, DType::f64), Tensor(), kEps, y, mean, rstd);
       },
       {"layernorm_forward", "f32, bf16 or f16", "f64"}},
      {"rmsnorm_backward_f64",
       [&] {
         Tensor dx = on({2, 8}, DType::f64), dweight = on({8}, DType::f64);
         ops::rmsnorm_backward(on({2, 8}, DType::f64), on({2, 8}, DType::f64), on({8}, DType::f64),
                               on({2}, DType::f64), dx, dweight);
       },
       {"rmsnorm_backward", "f32, bf16 or f16", "f64"}},
      {"add_rmsnorm_residual_on_cpu",
       [&] {
         Tensor sum = on({2, 8}, DType::f32), y = on({2, 8}, DType::f32), rstd = on({2}, DType::f32);
         ops::add_rmsnorm_forward(on({2, 8}, DType::f32), Tensor::zeros({2, 8}, DType::f32), on({8}, DType::f32),
                                  kEps, sum, y, rstd);
       },
       {"add_rmsnorm_forward", "'residual_in'", "f32[2, 8]@cpu", "cuda:0"}},
      {"add_layernorm_backward_residual_on_cpu",
       [&] {
         Tensor dx = on({2, 8}, DType::f32), dweight = on({8}, DType::f32), no_bias;
         ops::add_layernorm_backward(on({2, 8}, DType::f32), Tensor::zeros({2, 8}, DType::f32), on({2, 8}, DType::f32),
                                     on({8}, DType::f32), on({2}, DType::f32), on({2}, DType::f32), dx, dweight,
                                     no_bias);
       },
       {"add_layernorm_backward", "'dresidual'", "f32[2, 8]@cpu", "cuda:0"}},
  });
}

}  // namespace
}  // namespace strata::testing

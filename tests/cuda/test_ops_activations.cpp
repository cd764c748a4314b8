// CUDA GELU and SwiGLU, forward and backward, against the CPU (op_parity.h) over awkward shapes
// (1 element, odd sizes, sizes that are and are not multiples of the vector widths). Inputs reach
// far enough out (|x| up to 6) that the sigmoids saturate. Both backends compute each element in
// f32 from the same stored inputs (the CPU's exp_f32 against CUDA's expf, each within about an
// ulp), so f32 gets 1e-5 and the 16-bit formats dtype_tolerance (one rounding each).
#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

std::string tag(const Shape& s, DType d) { return shape_tag(s) + "_" + std::string(dtype_name(d)); }

Tensor like(const Tensor& t, Allocator& a) { return Tensor::empty(t.shape(), t.dtype(), a); }

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const Shape& s : awkward_shapes())
    for (DType d : cuda_dtypes()) {
      const double tol = dtype_tolerance(d);
      const InputSpec x{"x", s, d, -6, 6}, dy{"dy", s, d}, gate{"gate", s, d, -6, 6}, up{"up", s, d, -2, 2};
      out.push_back({"gelu_forward_" + tag(s, d), {x},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       Tensor y = like(in[0], a);
                       ops::gelu_forward(in[0], y);
                       return std::vector<Tensor>{y};
                     },
                     {tol}});
      out.push_back({"gelu_backward_" + tag(s, d), {dy, x},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       Tensor dx = like(in[0], a);
                       ops::gelu_backward(in[0], in[1], dx);
                       return std::vector<Tensor>{dx};
                     },
                     {tol}});
      out.push_back({"swiglu_forward_" + tag(s, d), {gate, up},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       Tensor y = like(in[0], a);
                       ops::swiglu_forward(in[0], in[1], y);
                       return std::vector<Tensor>{y};
                     },
                     {tol}});
      out.push_back({"swiglu_backward_" + tag(s, d), {dy, gate, up},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       Tensor dgate = like(in[0], a), dup = like(in[0], a);
                       ops::swiglu_backward(in[0], in[1], in[2], dgate, dup);
                       return std::vector<Tensor>{dgate, dup};
                     },
                     {tol}});
    }
  return out;
}

class ActivationParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(ActivationParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, ActivationParity, ::testing::ValuesIn(cases()), CaseName());

// The CUDA backend takes f32, bf16 and f16: f64 on the device is refused before any kernel runs.
TEST(ActivationCudaMisuse, RefusesF64) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  Tensor x = Tensor::zeros({3, 5}, DType::f64, device), y = Tensor::zeros({3, 5}, DType::f64, device);
  expect_error([&] { ops::swiglu_forward(x, x, y); }, {"swiglu_forward", "f32, bf16 or f16", "f64"});
}

}  // namespace
}  // namespace strata::testing

// CUDA RoPE against the CPU (op_parity.h): forward out of place and in place (y is x), backward
// (the inverse rotation), over [batch, seq, heads, head_dim] shapes with head_dim/2 odd, a
// multiple of neither vector width, of f32's only, and of both (the vector paths), at position
// offsets 0, 5 and 40000 (where angles run to 4e4 radians: the f64 angles matter) and two thetas.
// Both backends rotate by cos and sin computed in f64; CUDA rounds them to f32 and multiplies in
// f32, a few f32 roundings: f32 gets 1e-5, the 16-bit formats dtype_tolerance.
#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct RopeCase {
  Shape x;  // [batch, seq, heads, head_dim]
  int64_t position_offset;
  double theta;
};

const std::vector<RopeCase>& rope_cases() {
  static const std::vector<RopeCase> cases = {
      {{1, 1, 1, 2}, 0, 1e4},     {{2, 3, 5, 6}, 5, 1e4},   {{1, 17, 3, 8}, 0, 1e4},
      {{2, 5, 2, 16}, 40000, 1e4}, {{1, 7, 1, 130}, 5, 5e5}, {{3, 2, 4, 64}, 40000, 5e5},
  };
  return cases;
}

std::string tag(const RopeCase& c, DType d) {
  return shape_tag(c.x) + "_at" + std::to_string(c.position_offset) + "_theta" +
         std::to_string(static_cast<int64_t>(c.theta)) + "_" + std::string(dtype_name(d));
}

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const RopeCase& c : rope_cases())
    for (DType d : cuda_dtypes()) {
      const double tol = dtype_tolerance(d);
      const int64_t offset = c.position_offset;
      const double theta = c.theta;
      out.push_back({"rope_forward_" + tag(c, d), {{"x", c.x, d}},
                     [offset, theta](std::vector<Tensor>& in, Allocator& a) {
                       Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::rope_forward(in[0], offset, theta, y);
                       return std::vector<Tensor>{y};
                     },
                     {tol}});
      out.push_back({"rope_forward_in_place_" + tag(c, d), {{"x", c.x, d}},
                     [offset, theta](std::vector<Tensor>& in, Allocator&) {
                       ops::rope_forward(in[0], offset, theta, in[0]);
                       return std::vector<Tensor>{in[0]};
                     },
                     {tol}});
      out.push_back({"rope_backward_" + tag(c, d), {{"dy", c.x, d}},
                     [offset, theta](std::vector<Tensor>& in, Allocator& a) {
                       Tensor dx = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::rope_backward(in[0], offset, theta, dx);
                       return std::vector<Tensor>{dx};
                     },
                     {tol}});
    }
  return out;
}

class RopeParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(RopeParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, RopeParity, ::testing::ValuesIn(cases()), CaseName());

// The CUDA backend takes f32, bf16 and f16: f64 on the device is refused before any kernel runs.
TEST(RopeCudaMisuse, RefusesF64) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  Tensor x = Tensor::zeros({1, 2, 1, 4}, DType::f64, device);
  expect_error([&] { ops::rope_backward(x, 0, 1e4, x); }, {"rope_backward", "f32, bf16 or f16", "f64"});
}

}  // namespace
}  // namespace strata::testing

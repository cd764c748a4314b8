// RoPE in the rotate-half pairing: forward against a plain loop, in place, backward against finite
// differences and as the exact inverse, over one table of cases.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct RopeCase {
  Shape shape;  // [batch, seq, heads, head_dim]
  int64_t position_offset;
  double theta;
  DType dtype;
};

std::string case_name(const RopeCase& c) {
  return name_of(shape_tag(c.shape), "_at", c.position_offset, "_theta",
                 static_cast<int64_t>(c.theta), "_", dtype_name(c.dtype));
}
void PrintTo(const RopeCase& c, std::ostream* out) {
  *out << case_name(c);
}

const RopeCase kCases[] = {
    {{1, 1, 1, 2}, 0, 10000, DType::f64},     {{1, 3, 2, 4}, 5, 10000, DType::f64},
    {{2, 17, 3, 8}, 0, 10000, DType::f32},    {{1, 33, 1, 6}, 100, 500000, DType::f64},
    {{3, 5, 4, 16}, 1021, 10000, DType::f32}, {{1, 67, 2, 2}, 7, 10, DType::f64},
    {{2, 5, 3, 8}, 3, 10000, DType::bf16},    {{1, 17, 2, 4}, 9, 10000, DType::f16},
};

// y[b, s, h, :] by the definition: pair j with j + half, angle (offset + s) * theta^(-2j/dim).
Tensor reference(const RopeCase& c, const Tensor& x) {
  const std::vector<double> v = values(x);
  std::vector<double> y(v.size());
  const int64_t seq = c.shape[1], heads = c.shape[2], dim = c.shape[3], half = dim / 2;
  for (int64_t b = 0; b < c.shape[0]; ++b)
    for (int64_t s = 0; s < seq; ++s)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t j = 0; j < half; ++j) {
          const size_t base = static_cast<size_t>(((b * seq + s) * heads + h) * dim);
          const size_t lo = base + static_cast<size_t>(j), hi = lo + static_cast<size_t>(half);
          const double angle =
              static_cast<double>(c.position_offset + s) *
              std::pow(c.theta, -2.0 * static_cast<double>(j) / static_cast<double>(dim));
          y[lo] = v[lo] * std::cos(angle) - v[hi] * std::sin(angle);
          y[hi] = v[hi] * std::cos(angle) + v[lo] * std::sin(angle);
        }
  return Tensor::from_vector(y, c.shape);
}

Tensor forward(const RopeCase& c, const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  ops::rope_forward(x, c.position_offset, c.theta, y);
  return y;
}

class Rope : public ::testing::TestWithParam<RopeCase> {};

TEST_P(Rope, ForwardMatchesReference) {
  const RopeCase& c = GetParam();
  const Tensor x = random_tensor(c.shape, c.dtype, "x");
  EXPECT_LE(max_relative_error(forward(c, x), reference(c, x)), tolerance(c.dtype));
}

TEST_P(Rope, ForwardInPlace) {
  const RopeCase& c = GetParam();
  Tensor x = random_tensor(c.shape, c.dtype, "x");
  const Tensor want = forward(c, x);
  ops::rope_forward(x, c.position_offset, c.theta, x);
  EXPECT_EQ(max_relative_error(x, want), 0.0);
}

TEST_P(Rope, BackwardMatchesFiniteDifferences) {
  const RopeCase& c = GetParam();
  GradCheck op;
  op.inputs = {{"x", random_tensor(c.shape, DType::f64, "x")}};
  op.forward = [&](const std::vector<Tensor>& t) { return forward(c, t[0]); };
  op.backward = [&](const std::vector<Tensor>&, const Tensor& dy) {
    Tensor dx = Tensor::empty(dy.shape(), dy.dtype());
    ops::rope_backward(dy, c.position_offset, c.theta, dx);
    return std::vector<Tensor>{dx};
  };
  expect_gradients(op, c.dtype);
}

// A rotation's transpose is its inverse: backward undoes forward.
TEST_P(Rope, BackwardInvertsForward) {
  const RopeCase& c = GetParam();
  const Tensor x = random_tensor(c.shape, c.dtype, "x");
  Tensor y = forward(c, x);
  ops::rope_backward(y, c.position_offset, c.theta, y);
  EXPECT_LE(max_relative_error(y, x), tolerance(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(Ops, Rope, ::testing::ValuesIn(kCases), CaseName());

}  // namespace
}  // namespace strata::testing

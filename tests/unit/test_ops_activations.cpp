// GELU (tanh form) and SwiGLU: forward against the formulas in f64, backward against finite
// differences, for f32/f64 and the 16-bit storage formats, over one table of cases.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

enum class Act { gelu, swiglu };

struct ActCase {
  Act act;
  Shape shape;
  DType dtype;
};

std::string case_name(const ActCase& c) {
  return name_of(c.act == Act::gelu ? "gelu_" : "swiglu_", shape_tag(c.shape), "_",
                 dtype_name(c.dtype));
}
void PrintTo(const ActCase& c, std::ostream* out) {
  *out << case_name(c);
}

const ActCase kCases[] = {
    {Act::gelu, {1}, DType::f64},       {Act::gelu, {3, 17}, DType::f64},
    {Act::gelu, {2, 33}, DType::f32},   {Act::gelu, {67}, DType::bf16},
    {Act::gelu, {5, 13}, DType::f16},   {Act::gelu, {4, 257}, DType::f32},
    {Act::swiglu, {1}, DType::f64},     {Act::swiglu, {3, 17}, DType::f64},
    {Act::swiglu, {2, 33}, DType::f32}, {Act::swiglu, {67}, DType::bf16},
    {Act::swiglu, {5, 13}, DType::f16}, {Act::swiglu, {4, 257}, DType::f32},
};

// The inputs: x for GELU; gate and up for SwiGLU. Wide ranges reach the tails of tanh/sigmoid.
std::vector<Tensor> make_inputs(const ActCase& c) {
  if (c.act == Act::gelu) return {random_tensor(c.shape, c.dtype, "x", -5.0, 5.0)};
  return {random_tensor(c.shape, c.dtype, "gate", -8.0, 8.0),
          random_tensor(c.shape, c.dtype, "up", -2.0, 2.0)};
}

double gelu(double x) {
  return 0.5 * x *
         (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
}
double silu(double g) {
  return g / (1.0 + std::exp(-g));
}

Tensor reference(const ActCase& c, const std::vector<Tensor>& in) {
  const std::vector<double> a = values(in[0]);
  std::vector<double> y(a.size());
  if (c.act == Act::gelu) {
    for (size_t i = 0; i < a.size(); ++i) y[i] = gelu(a[i]);
  } else {
    const std::vector<double> up = values(in[1]);
    for (size_t i = 0; i < a.size(); ++i) y[i] = silu(a[i]) * up[i];
  }
  return Tensor::from_vector(y, c.shape);
}

Tensor forward(const ActCase& c, const std::vector<Tensor>& in) {
  Tensor y = Tensor::empty(in[0].shape(), in[0].dtype());
  if (c.act == Act::gelu)
    ops::gelu_forward(in[0], y);
  else
    ops::swiglu_forward(in[0], in[1], y);
  return y;
}

std::vector<Tensor> backward(const ActCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
  std::vector<Tensor> grads;
  for (const Tensor& t : in) grads.push_back(Tensor::empty(t.shape(), t.dtype()));
  if (c.act == Act::gelu)
    ops::gelu_backward(dy, in[0], grads[0]);
  else
    ops::swiglu_backward(dy, in[0], in[1], grads[0], grads[1]);
  return grads;
}

class Activations : public ::testing::TestWithParam<ActCase> {};

TEST_P(Activations, ForwardMatchesReference) {
  const ActCase& c = GetParam();
  const std::vector<Tensor> in = make_inputs(c);
  EXPECT_LE(max_relative_error(forward(c, in), reference(c, in)), tolerance(c.dtype));
}

TEST_P(Activations, BackwardMatchesFiniteDifferences) {
  const ActCase& c = GetParam();
  GradCheck op;
  const std::vector<Tensor> in = make_inputs(c);
  op.inputs.push_back({c.act == Act::gelu ? "x" : "gate", converted(in[0], DType::f64)});
  if (c.act == Act::swiglu) op.inputs.push_back({"up", converted(in[1], DType::f64)});
  op.forward = [&](const std::vector<Tensor>& t) { return forward(c, t); };
  op.backward = [&](const std::vector<Tensor>& t, const Tensor& dy) { return backward(c, t, dy); };
  expect_gradients(op, c.dtype);
}

// Activation gradients are overwritten, not accumulated: a buffer holding garbage gives the same.
TEST(ActivationOps, BackwardOverwritesGradients) {
  const Tensor gate = random_tensor({33}, DType::f32, "gate");
  const Tensor up = random_tensor({33}, DType::f32, "up");
  const Tensor dy = random_tensor({33}, DType::f32, "dy");
  Tensor dgate = Tensor::zeros({33}, DType::f32), dup = Tensor::zeros({33}, DType::f32);
  ops::swiglu_backward(dy, gate, up, dgate, dup);
  Tensor dgate2 = random_tensor({33}, DType::f32, "junk");
  Tensor dup2 = random_tensor({33}, DType::f32, "more junk");
  ops::swiglu_backward(dy, gate, up, dgate2, dup2);
  EXPECT_EQ(max_relative_error(dgate2, dgate), 0.0);
  EXPECT_EQ(max_relative_error(dup2, dup), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Ops, Activations, ::testing::ValuesIn(kCases), CaseName());

}  // namespace
}  // namespace strata::testing

// AdamW against the scalar formula run in f64 over several steps: bias correction, decoupled
// weight decay, gradient scaling, f32/f64 master weights, and bf16/f16 gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct AdamWCase {
  int64_t n;
  DType master;  // param, m, v
  DType grad;
  double weight_decay;
  double grad_scale;
  int steps;
};

std::string case_name(const AdamWCase& c) {
  return name_of("n", c.n, "_", dtype_name(c.master), "_grad_", dtype_name(c.grad), "_wd",
                 static_cast<int>(c.weight_decay * 100), "_scale",
                 static_cast<int>(c.grad_scale * 100), "_steps", c.steps);
}
void PrintTo(const AdamWCase& c, std::ostream* out) {
  *out << case_name(c);
}

const AdamWCase kCases[] = {
    {1, DType::f64, DType::f64, 0.0, 1.0, 1},     {17, DType::f64, DType::f64, 0.1, 1.0, 5},
    {67, DType::f32, DType::f32, 0.1, 0.5, 4},    {33, DType::f32, DType::bf16, 0.01, 1.0, 3},
    {5000, DType::f32, DType::f16, 0.1, 0.25, 3}, {3, DType::f64, DType::bf16, 0.0, 2.0, 6},
};

class AdamW : public ::testing::TestWithParam<AdamWCase> {};

TEST_P(AdamW, MatchesScalarFormulaOverSteps) {
  const AdamWCase& c = GetParam();
  ops::AdamWArgs args;
  args.lr = 1e-2;
  args.beta1 = 0.9;
  args.beta2 = 0.95;
  args.eps = 1e-8;
  args.weight_decay = c.weight_decay;
  args.grad_scale = c.grad_scale;

  Tensor param = random_tensor({c.n}, c.master, "param");
  Tensor m = Tensor::zeros({c.n}, c.master), v = Tensor::zeros({c.n}, c.master);
  std::vector<double> p_ref = values(param), m_ref(static_cast<size_t>(c.n)), v_ref(m_ref.size());

  for (int t = 1; t <= c.steps; ++t) {
    const Tensor grad = random_tensor({c.n}, c.grad, name_of("grad ", t));
    const std::vector<double> g_in = values(grad);
    const double bc1 = 1 - std::pow(args.beta1, t), bc2 = 1 - std::pow(args.beta2, t);
    for (size_t i = 0; i < p_ref.size(); ++i) {
      const double g = g_in[i] * c.grad_scale;
      m_ref[i] = args.beta1 * m_ref[i] + (1 - args.beta1) * g;
      v_ref[i] = args.beta2 * v_ref[i] + (1 - args.beta2) * g * g;
      const double m_hat = m_ref[i] / bc1, v_hat = v_ref[i] / bc2;
      p_ref[i] -= args.lr * (m_hat / (std::sqrt(v_hat) + args.eps) + c.weight_decay * p_ref[i]);
    }
    args.step = t;
    ops::adamw(param, grad, m, v, args);
  }
  EXPECT_LE(max_relative_error(param, Tensor::from_vector(p_ref, {c.n})), tolerance(c.master));
  EXPECT_LE(max_relative_error(m, Tensor::from_vector(m_ref, {c.n})), tolerance(c.master));
  EXPECT_LE(max_relative_error(v, Tensor::from_vector(v_ref, {c.n})), tolerance(c.master));
}

INSTANTIATE_TEST_SUITE_P(Ops, AdamW, ::testing::ValuesIn(kCases), CaseName());

// With a zero gradient only the decay acts: param *= (1 - lr * weight_decay), exactly decoupled
// from the adaptive term (m and v stay zero).
TEST(AdamWOps, ZeroGradientOnlyDecays) {
  Tensor param = Tensor::from_vector(std::vector<double>{2.0, -4.0}, {2});
  Tensor grad = Tensor::zeros({2}, DType::f64), m = Tensor::zeros({2}, DType::f64);
  Tensor v = Tensor::zeros({2}, DType::f64);
  ops::AdamWArgs args;
  args.lr = 0.1;
  args.weight_decay = 0.5;
  ops::adamw(param, grad, m, v, args);
  EXPECT_DOUBLE_EQ(param.data<double>()[0], 2.0 * 0.95);
  EXPECT_DOUBLE_EQ(param.data<double>()[1], -4.0 * 0.95);
}

}  // namespace
}  // namespace strata::testing

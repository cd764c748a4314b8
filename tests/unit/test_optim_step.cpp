// The device-side optimizer step's ops on the CPU (the reference the CUDA ones are held to):
// adamw_multi against adamw per tensor, its skip flag and copies; grad_norm_and_check against
// sum_squares; clip_factor against the trainer's formulas; gemm_ex's epilogues against gemm and
// the activation ops composed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/ops.h"
#include "unit/op_harness.h"
#include "unit/op_testing.h"

namespace strata::testing {
namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  c.copy_from(t);
  return c;
}

ops::AdamWArgs args_at(int64_t step) {
  ops::AdamWArgs args;
  args.lr = 1e-2;
  args.weight_decay = 0.1;
  args.step = step;
  return args;
}

struct Entry {
  Tensor param, grad, m, v;
};

Entry entry(int64_t n, DType master, DType grad, const std::string& name) {
  return {random_tensor({n}, master, name + " param"),
          random_tensor({n}, grad, name + " grad", -2, 2),
          random_tensor({n}, master, name + " m", -0.1, 0.1),
          random_tensor({n}, master, name + " v", 0, 0.1)};
}

TEST(AdamWMulti, MatchesAdamWPerTensor) {
  const std::vector<Entry> start = {entry(5, DType::f32, DType::f32, "a"),
                                    entry(33, DType::f32, DType::bf16, "b"),
                                    entry(7, DType::f64, DType::f16, "c")};
  const bool decays[3] = {true, false, true};
  const float scale = 0.3f;
  std::vector<ops::AdamWGroup> groups;
  std::vector<Entry> want;
  for (size_t i = 0; i < start.size(); ++i) {
    const Entry& s = start[i];
    ops::AdamWGroup g{copy_of(s.param), s.grad, copy_of(s.m), copy_of(s.v), Tensor(), decays[i]};
    if (i == 1) g.copy = Tensor::zeros({33}, DType::bf16);
    groups.push_back(g);
    Entry w{copy_of(s.param), s.grad, copy_of(s.m), copy_of(s.v)};
    ops::AdamWArgs args = args_at(4);
    args.grad_scale = scale;  // the f32 device value, widened
    args.weight_decay = decays[i] ? args.weight_decay : 0.0;
    ops::adamw(w.param, w.grad, w.m, w.v, args);
    want.push_back(w);
  }
  ops::adamw_multi(groups, args_at(4), Tensor::from_vector(std::vector<float>{scale}, {1}),
                   Tensor::from_vector(std::vector<int32_t>{0}, {1}));
  for (size_t i = 0; i < start.size(); ++i) {
    EXPECT_TRUE(same_bits(groups[i].param, want[i].param)) << i;
    EXPECT_TRUE(same_bits(groups[i].m, want[i].m)) << i;
    EXPECT_TRUE(same_bits(groups[i].v, want[i].v)) << i;
  }
  Tensor rounded = Tensor::empty({33}, DType::bf16);
  ops::cast(groups[1].param, rounded);
  EXPECT_TRUE(same_bits(groups[1].copy, rounded));
}

TEST(AdamWMulti, SkipFlagLeavesEverything) {
  const Entry s = entry(9, DType::f32, DType::f32, "a");
  std::vector<ops::AdamWGroup> groups = {
      {copy_of(s.param), s.grad, copy_of(s.m), copy_of(s.v), Tensor::zeros({9}, DType::f16), true}};
  ops::adamw_multi(groups, args_at(1), Tensor::from_vector(std::vector<float>{1.0f}, {1}),
                   Tensor::from_vector(std::vector<int32_t>{1}, {1}));
  EXPECT_TRUE(same_bits(groups[0].param, s.param));
  EXPECT_TRUE(same_bits(groups[0].m, s.m));
  EXPECT_TRUE(same_bits(groups[0].v, s.v));
  EXPECT_EQ(ops::sum_squares(groups[0].copy), 0.0);
}

TEST(AdamWMulti, RejectsMisuse) {
  const Entry s = entry(4, DType::f32, DType::f32, "a");
  Tensor scale = Tensor::from_vector(std::vector<float>{1.0f}, {1});
  Tensor skip = Tensor::from_vector(std::vector<int32_t>{0}, {1});
  std::vector<ops::AdamWGroup> groups = {{s.param, s.grad, s.m, s.v, Tensor(), true}};
  ops::AdamWArgs args = args_at(1);
  args.grad_scale = 0.5;  // the scale must come from the tensor
  EXPECT_THROW(ops::adamw_multi(groups, args, scale, skip), Error);
  EXPECT_THROW(ops::adamw_multi(groups, args_at(1), scale, scale), Error);  // skip must be i32
  groups[0].copy = Tensor::zeros({5}, DType::bf16);
  EXPECT_THROW(ops::adamw_multi(groups, args_at(1), scale, skip), Error);
}

TEST(GradNormAndCheck, SumsSquaresAndFlagsNonFinite) {
  Tensor a = random_tensor({100}, DType::f32, "a"), b = random_tensor({3, 7}, DType::bf16, "b");
  Tensor sum = Tensor::zeros({1}, DType::f64),
         flag = Tensor::from_vector(std::vector<int32_t>{7}, {1});
  ops::grad_norm_and_check({&a, &b}, sum, flag);
  EXPECT_DOUBLE_EQ(sum.data<double>()[0], ops::sum_squares(a) + ops::sum_squares(b));
  EXPECT_EQ(flag.data<int32_t>()[0], 0);
  ops::grad_norm_and_check({&a}, sum, flag, /*accumulate=*/true);
  EXPECT_DOUBLE_EQ(sum.data<double>()[0], 2 * ops::sum_squares(a) + ops::sum_squares(b));

  b.data<bf16>()[4] = bf16::from_float(std::numeric_limits<float>::infinity());
  ops::grad_norm_and_check({&a, &b}, sum, flag);
  EXPECT_EQ(flag.data<int32_t>()[0], 1);
  ops::grad_norm_and_check({&a}, sum, flag, /*accumulate=*/true);  // stays set
  EXPECT_EQ(flag.data<int32_t>()[0], 1);
}

// The trainer's decision (src/train/trainer.cpp): norm = sqrt(sum) / loss_scale; clip only above
// max_norm, by max_norm / (norm + 1e-6); grad_scale = clip / loss_scale.
TEST(ClipFactor, FollowsTheTrainersFormulas) {
  auto run = [](std::vector<double> sums, int32_t nonfinite, double loss, double max_norm,
                double loss_scale) {
    Tensor s = Tensor::from_vector(sums, {static_cast<int64_t>(sums.size())});
    Tensor flag = Tensor::from_vector(std::vector<int32_t>{nonfinite}, {1});
    Tensor l = std::isnan(loss) || loss != 0 ? Tensor::from_vector(std::vector<double>{loss}, {1})
                                             : Tensor();
    Tensor scale = Tensor::zeros({1}, DType::f32), skip = Tensor::zeros({1}, DType::i32),
           norm = Tensor::zeros({1}, DType::f64);
    ops::clip_factor(s, flag, l, {.max_norm = max_norm, .loss_scale = loss_scale}, scale, skip,
                     norm);
    return std::make_tuple(scale.data<float>()[0], skip.data<int32_t>()[0], norm.data<double>()[0]);
  };
  // norm 4 under max 5: no clipping.
  auto [s1, k1, n1] = run({9.0, 7.0}, 0, 0, 5.0, 1.0);
  EXPECT_EQ(n1, 4.0);
  EXPECT_EQ(k1, 0);
  EXPECT_EQ(s1, 1.0f);
  // norm 4 over max 2 with a loss scale of 8: sqrt(16 * 64) / 8 = 4.
  auto [s2, k2, n2] = run({1024.0}, 0, 1.5, 2.0, 8.0);
  EXPECT_EQ(n2, 4.0);
  EXPECT_EQ(k2, 0);
  EXPECT_EQ(s2, static_cast<float>(2.0 / (4.0 + 1e-6) / 8.0));
  // No clipping at all with max_norm 0.
  EXPECT_EQ(std::get<0>(run({1e6}, 0, 0, 0.0, 4.0)), 0.25f);
  // Every non-finite input skips, with grad_scale 0.
  EXPECT_EQ(std::get<1>(run({1.0}, 1, 0, 1.0, 1.0)), 1);
  EXPECT_EQ(std::get<1>(run({INFINITY}, 0, 0, 1.0, 1.0)), 1);
  EXPECT_EQ(std::get<1>(run({1.0}, 0, std::numeric_limits<double>::quiet_NaN(), 1.0, 1.0)), 1);
  EXPECT_EQ(std::get<0>(run({1.0}, 1, 0, 1.0, 1.0)), 0.0f);
}

// gemm_ex's CPU epilogues against gemm and the activation ops one after another, in f64.
TEST(GemmEx, EpiloguesMatchTheComposedOps) {
  const int64_t m = 5, n = 4, k = 3;
  Tensor a = random_tensor({m, k}, DType::f64, "a"), b = random_tensor({n, k}, DType::f64, "b");
  Tensor bias = random_tensor({n}, DType::f64, "bias");
  Tensor pre = Tensor::empty({m, n}, DType::f64);
  ops::gemm(a, b, pre, {.trans_b = true});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) pre.data<double>()[i * n + j] += bias.data<double>()[j];
  Tensor want = Tensor::empty({m, n}, DType::f64);
  ops::gelu_forward(pre, want);

  Tensor c = Tensor::empty({m, n}, DType::f64), aux = Tensor::empty({m, n}, DType::f64);
  ops::gemm_ex(a, b, c, {.trans_b = true}, {.bias = &bias, .gelu = true, .gelu_aux = &aux});
  EXPECT_LE(max_relative_error(aux, pre), 1e-14);
  EXPECT_LE(max_relative_error(c, want), 1e-14);

  // Backward: dpre = (dy @ W) * gelu'(pre), dbias = column sums of dpre.
  Tensor dy = random_tensor({m, n}, DType::f64, "dy"), w = random_tensor({n, n}, DType::f64, "w");
  Tensor dh = Tensor::empty({m, n}, DType::f64), dpre = Tensor::empty({m, n}, DType::f64);
  ops::gemm(dy, w, dh);
  ops::gelu_backward(dh, pre, dpre);
  Tensor got = Tensor::empty({m, n}, DType::f64), dbias = Tensor::empty({n}, DType::f64);
  ops::gemm_ex(dy, w, got, {}, {.dgelu_aux = &pre, .bias_grad = &dbias});
  EXPECT_LE(max_relative_error(got, dpre), 1e-14);
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t i = 0; i < m; ++i) s += dpre.data<double>()[i * n + j];
    EXPECT_NEAR(dbias.data<double>()[j], s, 1e-13);
  }

  // dW = dy^T @ x with db = the column sums of dy.
  Tensor x = random_tensor({m, k}, DType::f64, "x"), dw = Tensor::zeros({n, k}, DType::f64);
  Tensor db = Tensor::empty({n}, DType::f64);
  ops::gemm_ex(dy, x, dw, {.trans_a = true}, {.bias_grad = &db});
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t i = 0; i < m; ++i) s += dy.data<double>()[i * n + j];
    EXPECT_NEAR(db.data<double>()[j], s, 1e-13);
  }
}

}  // namespace
}  // namespace strata::testing

// Learning-rate schedules, loss scaling, and AdamW with master weights.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "kernels/ops.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"

using namespace strata;

TEST(LrSchedule, WarmupThenDecayToMin) {
  LrSchedule s{1e-3, 1e-4, 10, 110, "cosine"};
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(60), 1e-4 + 0.9e-3 * 0.5);  // halfway: cos(pi/2) = 0
  EXPECT_DOUBLE_EQ(s.at(110), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(500), 1e-4);  // past the end: stays at min_lr
  s.kind = "linear";
  EXPECT_DOUBLE_EQ(s.at(35), 1e-3 - 0.9e-3 * 0.25);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(s.at(80), 1e-3);
  s.kind = "exponential";
  EXPECT_THROW(s.at(50), Error);
}

TEST(LossScaler, SkipsOverflowHalvesAndGrows) {
  LossScaler scaler(true, 1024.0, 3);
  EXPECT_TRUE(scaler.update(1.0));
  EXPECT_FALSE(scaler.update(INFINITY));
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_FALSE(scaler.update(NAN));
  EXPECT_EQ(scaler.scale(), 256.0);
  EXPECT_EQ(scaler.state().skipped_steps, 2);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scaler.update(2.0));
  EXPECT_EQ(scaler.scale(), 512.0);
  LossScaler off(false);
  EXPECT_EQ(off.scale(), 1.0);
  EXPECT_FALSE(off.update(INFINITY));  // never apply a non-finite step, even unscaled
}

TEST(AdamW, MasterWeightsFollowTheF32Update) {
  // The same parameters held in f32 and in bf16 (with an f32 master): after several steps the
  // bf16 run's master equals the f32 run's weights up to the bf16 rounding of the gradients.
  ParameterRegistry a, b;
  Parameter& pa = a.add_replicated("w", {64}, Init::normal, 0.5, true, DType::f32);
  Parameter& pb = b.add_replicated("w", {64}, Init::normal, 0.5, true, DType::bf16);
  b.initialize(5);
  ops::cast(pb.value, pa.value);  // both start from the same (bf16-representable) weights
  AdamW opt_a(a, {0.9, 0.95, 1e-8, 0.1}), opt_b(b, {0.9, 0.95, 1e-8, 0.1});
  for (int step = 1; step <= 5; ++step) {
    for (int i = 0; i < 64; ++i) {
      float g = std::sin(0.1f * static_cast<float>(i * step));
      pa.grad.data<float>()[i] = g;
      // A bf16 parameter's gradient reaches the optimizer as its f32 main_grad, summed from
      // bf16 micro-batch gradients: here one, rounded to bf16.
      pb.accum().data<float>()[i] = bf16::from_float(g).to_float();
    }
    opt_a.step(1e-2, 1.0);
    opt_b.step(1e-2, 1.0);
  }
  EXPECT_EQ(opt_b.steps_taken(), 5);
  Tensor master = *opt_b.state()[0].tensor;
  ASSERT_EQ(opt_b.state()[0].name, "w/master");
  double worst = 0;
  for (int i = 0; i < 64; ++i) {
    worst = std::max(worst, std::abs(double(master.data<float>()[i]) - pa.value.data<float>()[i]));
    // The bf16 parameter is the master rounded to nearest.
    EXPECT_EQ(pb.value.data<bf16>()[i].bits, bf16::from_float(master.data<float>()[i]).bits);
  }
  // Adam's update m / sqrt(v) is invariant to the gradient's scale, so a relative rounding of
  // 2^-9 in each gradient changes each step (of size ~lr = 1e-2) by ~2^-9 relative: over five
  // steps well under 1e-4.
  EXPECT_LT(worst, 1e-4);
}

TEST(AdamW, NoDecayWhereTheParameterSaysSo) {
  ParameterRegistry r;
  Parameter& decayed = r.add_replicated("w", {4}, Init::ones, 0, true, DType::f64);
  Parameter& kept = r.add_replicated("norm.weight", {4}, Init::ones, 0, false, DType::f64);
  r.initialize(1);
  r.zero_grads();
  AdamW opt(r, {0.9, 0.95, 1e-8, 0.5});
  opt.step(0.1, 1.0);  // zero gradients: only decay moves weights
  EXPECT_DOUBLE_EQ(decayed.value.data<double>()[0], 1.0 - 0.1 * 0.5);
  EXPECT_DOUBLE_EQ(kept.value.data<double>()[0], 1.0);
}

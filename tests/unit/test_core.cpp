// Core: dtypes and half conversions, tensors and views, Philox, error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/philox.h"
#include "core/random.h"
#include "core/tensor.h"

using namespace strata;

TEST(Half, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even one (1).
  EXPECT_EQ(bf16::from_float(1.0f + std::ldexp(1.0f, -8)).to_float(), 1.0f);
  // 1 + 3*2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to the even one.
  EXPECT_EQ(bf16::from_float(1.0f + 3 * std::ldexp(1.0f, -8)).to_float(), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(bf16::from_float(-2.5f).to_float(), -2.5f);
  EXPECT_TRUE(std::isinf(bf16::from_float(std::numeric_limits<float>::infinity()).to_float()));
  EXPECT_TRUE(std::isnan(bf16::from_float(std::nanf("")).to_float()));
}

TEST(Half, F16RoundTripAndRounding) {
  // Every finite f16 bit pattern survives f16 -> f32 -> f16 unchanged.
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    f16 h;
    h.bits = static_cast<uint16_t>(b);
    float x = h.to_float();
    if (std::isnan(x)) continue;
    EXPECT_EQ(f16::from_float(x).bits, h.bits) << "bits " << b;
  }
  EXPECT_EQ(f16::from_float(65504.0f).to_float(), 65504.0f);
  EXPECT_TRUE(std::isinf(f16::from_float(65520.0f).to_float()));   // halfway to 2^16: rounds up
  EXPECT_EQ(f16::from_float(65519.0f).to_float(), 65504.0f);
  EXPECT_EQ(f16::from_float(1.0f + std::ldexp(1.0f, -11)).to_float(), 1.0f);  // tie to even
  EXPECT_EQ(f16::from_float(std::ldexp(1.0f, -24)).to_float(), std::ldexp(1.0f, -24));  // min subnormal
  EXPECT_EQ(f16::from_float(std::ldexp(1.0f, -25)).to_float(), 0.0f);  // tie to even (0)
  EXPECT_EQ(f16::from_float(std::ldexp(1.5f, -25)).to_float(), std::ldexp(1.0f, -24));
}

TEST(Tensor, ViewsShareStorageAndSliceOffsets) {
  std::vector<float> values(24);
  for (int i = 0; i < 24; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i);
  Tensor t = Tensor::from_vector(values, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  Tensor v = t.view({6, -1});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_EQ(v.raw(), t.raw());
  Tensor s = t.slice(1, 1, 3);  // [2, 2, 4], starts at element 4
  EXPECT_EQ(s.shape(), (Shape{2, 2, 4}));
  EXPECT_FALSE(s.is_contiguous());
  Tensor c = s.contiguous();
  EXPECT_EQ(c.data<float>()[0], 4.0f);
  EXPECT_EQ(c.data<float>()[8], 16.0f);
  EXPECT_EQ(t.describe(), "f32[2, 3, 4]@cpu");
}

TEST(Tensor, MisuseNamesTheProblem) {
  Tensor t = Tensor::zeros({2, 3}, DType::f32);
  try {
    t.view({4, 2});
    FAIL() << "view to a wrong size must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 2]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f32[2, 3]@cpu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(t.slice(1, 2, 4), Error);
}

TEST(Philox, KnownAnswer) {
  // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
  philox::Block zero = philox::philox4x32({{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  philox::Block ones = philox::philox4x32({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                                          0xffffffffu, 0xffffffffu);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
}

TEST(Philox, SliceDrawsTheSameValuesAsTheWhole) {
  Tensor whole = Tensor::empty({1000}, DType::f32);
  fill_normal(whole, 1234, philox::stream_key("layers.0.attn.wq"), 0.0, 0.02);
  Tensor part = Tensor::empty({100}, DType::f32);
  fill_normal(part, 1234, philox::stream_key("layers.0.attn.wq"), 0.0, 0.02, 700);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(part.data<float>()[i], whole.data<float>()[700 + i]);
  // Moments of 1000 draws of normal(0, 0.02): mean within ~4 standard errors, std within 10%.
  double s = 0, s2 = 0;
  for (int i = 0; i < 1000; ++i) {
    double x = whole.data<float>()[i];
    s += x;
    s2 += x * x;
  }
  double mean = s / 1000, stddev = std::sqrt(s2 / 1000 - mean * mean);
  EXPECT_LT(std::abs(mean), 4 * 0.02 / std::sqrt(1000.0));
  EXPECT_NEAR(stddev, 0.02, 0.002);
}
